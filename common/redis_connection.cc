#include "common/redis_connection.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <csignal>
#include <mutex>
#include <utility>

namespace dtm {

namespace {

timeval ToTimeval(int ms) {
  timeval tv;
  tv.tv_sec = ms / 1000;
  tv.tv_usec = (ms % 1000) * 1000;
  return tv;
}

void IgnoreSigpipeOnce() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGPIPE, SIG_IGN); });
}

}  // namespace

void RedisReplyDeleter::operator()(redisReply* reply) const { freeReplyObject(reply); }

Status RedisErrorStatus(const std::string& address, const std::string& message) {
  const std::string word = message.substr(0, message.find(' '));
  StatusCode code = StatusCode::kInternal;
  if (word == "WRONGTYPE") {
    code = StatusCode::kFailedPrecondition;
  } else if (word == "NOAUTH" || word == "WRONGPASS") {
    code = StatusCode::kUnauthenticated;
  } else if (word == "NOPERM") {
    code = StatusCode::kPermissionDenied;
  } else if (word == "OOM") {
    code = StatusCode::kResourceExhausted;
  } else if (word == "LOADING" || word == "BUSY" || word == "TRYAGAIN" || word == "MASTERDOWN" ||
             word == "MISCONF") {
    code = StatusCode::kUnavailable;
  }
  return Status(code, "Redis at " + address + " replied: " + message);
}

StatusOr<std::unique_ptr<RedisConnection>> RedisConnection::Open(const RedisOptions& options) {
  IgnoreSigpipeOnce();
  const std::string address = options.Address();
  redisContext* context =
      redisConnectWithTimeout(options.host.c_str(), options.port, ToTimeval(options.connect_timeout_ms));
  if (context == nullptr) return UnavailableError("Redis at " + address + ": cannot allocate a connection");
  // Owned from here on, so that every early return below frees it.
  std::unique_ptr<RedisConnection> connection(new RedisConnection(context, address));
  if (context->err != 0) {
    return UnavailableError("Redis at " + address + " is unreachable: " + context->errstr);
  }
  if (redisSetTimeout(context, ToTimeval(options.command_timeout_ms)) != REDIS_OK) {
    return UnavailableError("Redis at " + address + ": cannot set the command timeout");
  }
  // Detects a peer that vanished without closing (a killed node) on an idle connection.
  redisEnableKeepAlive(context);

  if (options.password) {
    StatusOr<RedisReply> reply = connection->Command({"AUTH", *options.password});
    // Whatever the reply's word (WRONGPASS, or ERR from a server without a password), AUTH failed.
    if (!reply.ok() && reply.status().code() != StatusCode::kUnavailable) {
      return Status(StatusCode::kUnauthenticated, reply.status().message());
    }
    if (!reply.ok()) return reply.status();
  }
  if (options.db != 0) {
    StatusOr<RedisReply> reply = connection->Command({"SELECT", std::to_string(options.db)});
    if (!reply.ok() && reply.status().code() == StatusCode::kInternal) {
      return InvalidArgumentError("Redis database " + std::to_string(options.db) +
                                  " cannot be selected: " + reply.status().message());
    }
    if (!reply.ok()) return reply.status();
  }
  return connection;
}

RedisConnection::~RedisConnection() { redisFree(context_); }

namespace {

// Explicit lengths make every argument binary-safe, like %b in a format string.
struct Argv {
  explicit Argv(const std::vector<std::string>& args) {
    argv.reserve(args.size());
    lengths.reserve(args.size());
    for (const std::string& arg : args) {
      argv.push_back(arg.data());
      lengths.push_back(arg.size());
    }
  }
  std::vector<const char*> argv;
  std::vector<size_t> lengths;
};

}  // namespace

Status RedisConnection::Lost() {
  broken_ = true;
  return UnavailableError("Redis at " + address_ +
                          ": connection lost: " + (context_->err != 0 ? context_->errstr : "no reply"));
}

StatusOr<RedisReply> RedisConnection::Command(const std::vector<std::string>& args) {
  if (broken_) return UnavailableError("Redis at " + address_ + ": connection is broken");
  Argv argv(args);
  RedisReply reply(static_cast<redisReply*>(
      redisCommandArgv(context_, static_cast<int>(args.size()), argv.argv.data(), argv.lengths.data())));
  if (reply == nullptr) return Lost();
  if (reply->type == REDIS_REPLY_ERROR)
    return RedisErrorStatus(address_, std::string(reply->str, reply->len));
  return reply;
}

StatusOr<std::vector<RedisReply>> RedisConnection::Pipeline(const std::vector<std::vector<std::string>>& commands) {
  if (broken_) return UnavailableError("Redis at " + address_ + ": connection is broken");
  for (const std::vector<std::string>& args : commands) {
    Argv argv(args);
    if (redisAppendCommandArgv(context_, static_cast<int>(args.size()), argv.argv.data(), argv.lengths.data()) !=
        REDIS_OK) {
      return Lost();
    }
  }
  std::vector<RedisReply> replies;
  replies.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    void* reply = nullptr;
    if (redisGetReply(context_, &reply) != REDIS_OK || reply == nullptr) return Lost();
    replies.emplace_back(static_cast<redisReply*>(reply));
  }
  return replies;
}

}  // namespace dtm
