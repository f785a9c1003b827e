#include "common/redis_store.h"

#include <hiredis/hiredis.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <set>
#include <thread>
#include <utility>

namespace dtm {

namespace {

// SCAN's COUNT: keys examined per round trip. Larger means fewer round trips for a big keyspace;
// each SCAN still returns quickly, which is why it, not KEYS, walks the keyspace.
constexpr int kScanCount = 1000;

Status UnexpectedReply(const std::string& command, const redisReply& reply) {
  return InternalError("Redis replied to " + command + " with unexpected reply type " +
                       std::to_string(reply.type));
}

StatusOr<long long> IntegerOf(const std::string& command, const RedisReply& reply) {
  if (reply->type != REDIS_REPLY_INTEGER) return UnexpectedReply(command, *reply);
  return reply->integer;
}

// The strings of an array reply, each binary-safe.
StatusOr<std::vector<std::string>> StringsOf(const std::string& command, const redisReply& reply) {
  if (reply.type != REDIS_REPLY_ARRAY) return UnexpectedReply(command, reply);
  std::vector<std::string> strings;
  strings.reserve(reply.elements);
  for (size_t i = 0; i < reply.elements; ++i) {
    const redisReply& element = *reply.element[i];
    if (element.type != REDIS_REPLY_STRING) return UnexpectedReply(command, element);
    strings.emplace_back(element.str, element.len);
  }
  return strings;
}

// A SCAN MATCH pattern for the keys starting with `prefix`: glob characters in it are escaped so
// that they match themselves.
std::string PrefixPattern(const std::string& prefix) {
  std::string pattern;
  for (char c : prefix) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') pattern += '\\';
    pattern += c;
  }
  return pattern + "*";
}

Status ValidateOptions(const RedisOptions& options) {
  const std::string address = options.Address();
  if (options.host.empty()) return InvalidArgumentError("Redis host is empty");
  if (options.port < 1 || options.port > 65535) {
    return InvalidArgumentError("Redis port " + std::to_string(options.port) + " is not in 1..65535");
  }
  if (options.connect_timeout_ms <= 0 || options.command_timeout_ms <= 0) {
    return InvalidArgumentError("Redis timeouts for " + address + " must be positive");
  }
  if (options.max_retries < 0 || options.initial_backoff_ms < 0 ||
      options.max_backoff_ms < options.initial_backoff_ms) {
    return InvalidArgumentError("Redis retry options for " + address +
                                " need max_retries >= 0 and 0 <= initial_backoff_ms <= max_backoff_ms");
  }
  if (options.db < 0) return InvalidArgumentError("Redis database " + std::to_string(options.db) + " < 0");
  return OkStatus();
}

}  // namespace

StatusOr<std::unique_ptr<RedisStore>> RedisStore::Connect(const RedisOptions& options) {
  RETURN_IF_ERROR(ValidateOptions(options));
  std::unique_ptr<RedisStore> store(new RedisStore(options));
  RETURN_IF_ERROR(store->Ping());
  return store;
}

StatusOr<RedisReply> RedisStore::TryOnce(const std::vector<std::string>& args) {
  if (connection_ != nullptr && connection_->broken()) connection_.reset();
  if (connection_ == nullptr) {
    ASSIGN_OR_RETURN(connection_, RedisConnection::Open(options_));
  }
  return connection_->Command(args);
}

StatusOr<RedisReply> RedisStore::Run(const std::vector<std::string>& args) {
  std::lock_guard<std::mutex> lock(mu_);
  int backoff_ms = options_.initial_backoff_ms;
  Status last;
  for (int attempt = 0; attempt <= options_.max_retries; ++attempt) {
    if (attempt > 0) {
      spdlog::warn("{} (retry {}/{} in {} ms)", last.message(), attempt, options_.max_retries, backoff_ms);
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
      backoff_ms = std::min(backoff_ms * 2, options_.max_backoff_ms);
    }
    StatusOr<RedisReply> reply = TryOnce(args);
    if (reply.ok() || reply.status().code() != StatusCode::kUnavailable) return reply;
    last = reply.status();
  }
  return UnavailableError("Redis at " + options_.Address() + " is unavailable after " +
                          std::to_string(options_.max_retries + 1) + " attempts: " + last.message());
}

StatusOr<std::optional<std::string>> RedisStore::Get(const std::string& key) {
  ASSIGN_OR_RETURN(RedisReply reply, Run({"GET", key}));
  if (reply->type == REDIS_REPLY_NIL) return std::optional<std::string>();
  if (reply->type != REDIS_REPLY_STRING) return UnexpectedReply("GET", *reply);
  return std::optional<std::string>(std::string(reply->str, reply->len));
}

Status RedisStore::Set(const std::string& key, const std::string& value) {
  return Run({"SET", key, value}).status();
}

StatusOr<bool> RedisStore::SetIfAbsent(const std::string& key, const std::string& value) {
  ASSIGN_OR_RETURN(RedisReply reply, Run({"SETNX", key, value}));
  ASSIGN_OR_RETURN(long long set, IntegerOf("SETNX", reply));
  return set == 1;
}

Status RedisStore::Delete(const std::string& key) { return Run({"DEL", key}).status(); }

Status RedisStore::HashSet(const std::string& key, const std::string& field, const std::string& value) {
  return Run({"HSET", key, field, value}).status();
}

StatusOr<std::map<std::string, std::string>> RedisStore::HashGetAll(const std::string& key) {
  ASSIGN_OR_RETURN(RedisReply reply, Run({"HGETALL", key}));
  // RESP2 (all that hiredis 0.14 speaks) answers HGETALL with field, value, field, value, ...
  ASSIGN_OR_RETURN(std::vector<std::string> flat, StringsOf("HGETALL", *reply));
  if (flat.size() % 2 != 0) return InternalError("Redis replied to HGETALL with an odd number of strings");
  std::map<std::string, std::string> hash;
  for (size_t i = 0; i < flat.size(); i += 2) hash.emplace(std::move(flat[i]), std::move(flat[i + 1]));
  return hash;
}

Status RedisStore::HashDelete(const std::string& key, const std::string& field) {
  return Run({"HDEL", key, field}).status();
}

Status RedisStore::ListPush(const std::string& key, const std::string& value) {
  return Run({"RPUSH", key, value}).status();
}

StatusOr<std::vector<std::string>> RedisStore::ListRange(const std::string& key) {
  ASSIGN_OR_RETURN(RedisReply reply, Run({"LRANGE", key, "0", "-1"}));
  return StringsOf("LRANGE", *reply);
}

StatusOr<std::vector<std::string>> RedisStore::Keys(const std::string& prefix) {
  const std::string pattern = PrefixPattern(prefix);
  // SCAN may return a key more than once; the set keeps each once, sorted.
  std::set<std::string> keys;
  std::string cursor = "0";
  do {
    ASSIGN_OR_RETURN(RedisReply reply,
                     Run({"SCAN", cursor, "MATCH", pattern, "COUNT", std::to_string(kScanCount)}));
    // The reply is [next cursor, [key, ...]].
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING) {
      return UnexpectedReply("SCAN", *reply);
    }
    cursor.assign(reply->element[0]->str, reply->element[0]->len);
    ASSIGN_OR_RETURN(std::vector<std::string> batch, StringsOf("SCAN", *reply->element[1]));
    for (std::string& key : batch) keys.insert(std::move(key));
  } while (cursor != "0");
  return std::vector<std::string>(keys.begin(), keys.end());
}

Status RedisStore::Ping() {
  ASSIGN_OR_RETURN(RedisReply reply, Run({"PING"}));
  if (reply->type != REDIS_REPLY_STATUS) return UnexpectedReply("PING", *reply);
  return OkStatus();
}

}  // namespace dtm
