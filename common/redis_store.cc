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
  if (options.outage_probe_interval_ms <= 0 || options.pool_size < 0) {
    return InvalidArgumentError("Redis outage probe interval for " + address +
                                " must be positive and the pool size not negative");
  }
  return OkStatus();
}

}  // namespace

StatusOr<std::unique_ptr<RedisStore>> RedisStore::Connect(const RedisOptions& options) {
  RETURN_IF_ERROR(ValidateOptions(options));
  std::unique_ptr<RedisStore> store(new RedisStore(options));
  RETURN_IF_ERROR(store->Ping());
  return store;
}

int RedisStore::AttemptsAllowed() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!down_) return 1 + options_.max_retries;
  const auto now = Steady::now();
  if (now < next_probe_) return 0;
  next_probe_ = now + std::chrono::milliseconds(options_.outage_probe_interval_ms);
  return 1;
}

void RedisStore::NoteOutcome(bool reached, const Status& error) {
  std::lock_guard<std::mutex> lock(mu_);
  if (reached) {
    if (down_) spdlog::info("Redis at {} is reachable again", options_.Address());
    down_ = false;
    return;
  }
  last_error_ = error.message();
  if (!down_) {
    down_ = true;
    down_since_ = Steady::now();
    next_probe_ = down_since_ + std::chrono::milliseconds(options_.outage_probe_interval_ms);
    spdlog::warn("{}; commands fail at once until it answers again (one try per {} ms)", error.message(),
                 options_.outage_probe_interval_ms);
  }
}

bool RedisStore::up() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !down_;
}

StatusOr<std::unique_ptr<RedisConnection>> RedisStore::Checkout() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!idle_.empty()) {
      std::unique_ptr<RedisConnection> connection = std::move(idle_.back());
      idle_.pop_back();
      return connection;
    }
  }
  return RedisConnection::Open(options_);
}

void RedisStore::Checkin(std::unique_ptr<RedisConnection> connection) {
  if (connection->broken()) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (static_cast<int>(idle_.size()) < options_.pool_size) idle_.push_back(std::move(connection));
}

template <typename T, typename F>
StatusOr<T> RedisStore::RunOn(F&& use) {
  const int attempts = AttemptsAllowed();
  if (attempts == 0) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(Steady::now() - down_since_).count();
    return UnavailableError("Redis at " + options_.Address() + " has been unreachable for " + std::to_string(seconds) +
                            " s: " + last_error_);
  }
  int backoff_ms = options_.initial_backoff_ms;
  Status last;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    if (attempt > 0) {
      spdlog::warn("{} (retry {}/{} in {} ms)", last.message(), attempt, attempts - 1, backoff_ms);
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
      backoff_ms = std::min(backoff_ms * 2, options_.max_backoff_ms);
    }
    StatusOr<std::unique_ptr<RedisConnection>> connection = Checkout();
    if (!connection.ok()) {
      if (connection.status().code() != StatusCode::kUnavailable) return connection.status();
      last = connection.status();
      continue;
    }
    StatusOr<T> result = use(**connection);
    Checkin(std::move(*connection));
    if (result.ok() || result.status().code() != StatusCode::kUnavailable) {
      NoteOutcome(/*reached=*/true, OkStatus());
      return result;
    }
    last = result.status();
  }
  Status failed = UnavailableError("Redis at " + options_.Address() + " is unavailable after " +
                                   std::to_string(attempts) + (attempts == 1 ? " attempt: " : " attempts: ") +
                                   last.message());
  NoteOutcome(/*reached=*/false, failed);
  return failed;
}

StatusOr<RedisReply> RedisStore::Run(const std::vector<std::string>& args) {
  return RunOn<RedisReply>([&](RedisConnection& connection) { return connection.Command(args); });
}

StatusOr<std::vector<bool>> RedisStore::Exist(const std::vector<std::string>& keys) {
  // Pipelines of a thousand: one round trip each, and replies that stay small.
  constexpr size_t kBatch = 1000;
  std::vector<bool> exist;
  exist.reserve(keys.size());
  for (size_t begin = 0; begin < keys.size(); begin += kBatch) {
    std::vector<std::vector<std::string>> commands;
    for (size_t i = begin; i < std::min(keys.size(), begin + kBatch); ++i) commands.push_back({"EXISTS", keys[i]});
    ASSIGN_OR_RETURN(std::vector<RedisReply> replies,
                     RunOn<std::vector<RedisReply>>(
                         [&](RedisConnection& connection) { return connection.Pipeline(commands); }));
    for (const RedisReply& reply : replies) {
      if (reply->type == REDIS_REPLY_ERROR) {
        return RedisErrorStatus(options_.Address(), std::string(reply->str, reply->len));
      }
      ASSIGN_OR_RETURN(long long count, IntegerOf("EXISTS", reply));
      exist.push_back(count > 0);
    }
  }
  return exist;
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

Status RedisStore::ListTrimFront(const std::string& key, size_t count) {
  return Run({"LTRIM", key, std::to_string(count), "-1"}).status();
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
