// RedisConnection: one hiredis connection, and RedisReply, the owner of one hiredis reply.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/redis_options.h"
#include "common/status.h"

// hiredis's structs, declared here so that only redis_connection.cc includes hiredis.
struct redisContext;
struct redisReply;

namespace dtm {

struct RedisReplyDeleter {
  void operator()(redisReply* reply) const;
};
// Owns one reply (and, through it, its elements), freed with freeReplyObject.
using RedisReply = std::unique_ptr<redisReply, RedisReplyDeleter>;

// Owns one redisContext: connects (with AUTH and SELECT as the options say) and runs commands.
// hiredis leaves a context useless after any I/O error or timeout, so the connection then reports
// broken() and its owner opens a new one; this class never reconnects by itself.
//
// Writing to a socket that Redis has closed raises SIGPIPE, which would end the process; hiredis
// writes with write(2), which cannot suppress it, so the first Open() ignores SIGPIPE process-wide
// (errors then come back as EPIPE, which breaks the connection like any other I/O error).
//
// Thread-safety: not thread-safe (neither is a redisContext); the owner serializes calls.
class RedisConnection {
 public:
  // UNAVAILABLE naming host:port when Redis cannot be reached or does not answer in time;
  // UNAUTHENTICATED when AUTH is refused; INVALID_ARGUMENT when SELECT is.
  static StatusOr<std::unique_ptr<RedisConnection>> Open(const RedisOptions& options);

  ~RedisConnection();
  RedisConnection(const RedisConnection&) = delete;
  RedisConnection& operator=(const RedisConnection&) = delete;

  // Runs one command given as its arguments, each binary-safe. An error reply becomes a status
  // carrying Redis's message (see RedisErrorStatus); a lost connection or a timeout becomes
  // UNAVAILABLE and leaves the connection broken().
  StatusOr<RedisReply> Command(const std::vector<std::string>& args);

  // Sends every command, then reads every reply (one round trip for all of them), in order. An
  // error reply is returned as a reply (its type is REDIS_REPLY_ERROR), not as a status; a lost
  // connection or a timeout is UNAVAILABLE and leaves the connection broken().
  StatusOr<std::vector<RedisReply>> Pipeline(const std::vector<std::vector<std::string>>& commands);

  bool broken() const { return broken_; }

 private:
  RedisConnection(redisContext* context, std::string address) : context_(context), address_(address) {}
  // Marks the connection broken; UNAVAILABLE with hiredis's reason.
  Status Lost();

  redisContext* context_;  // owned; freed with redisFree
  std::string address_;    // host:port, for messages
  bool broken_ = false;
};

// The status for a Redis error reply `message` from the server at `address`: the code follows the
// reply's first word (WRONGTYPE: FAILED_PRECONDITION; NOAUTH, WRONGPASS: UNAUTHENTICATED; NOPERM:
// PERMISSION_DENIED; OOM: RESOURCE_EXHAUSTED; LOADING, BUSY, TRYAGAIN, MASTERDOWN, MISCONF:
// UNAVAILABLE, for they pass; anything else: INTERNAL), the message is Redis's own.
Status RedisErrorStatus(const std::string& address, const std::string& message);

}  // namespace dtm
