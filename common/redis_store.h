// RedisStore: the Store on a Redis server, which holds the coordinator's durable state.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/redis_connection.h"
#include "common/redis_options.h"
#include "common/status.h"
#include "common/store.h"

namespace dtm {

// Runs each Store operation as one Redis command on one connection, which it reopens whenever it
// breaks. Each command is tried at most 1 + max_retries times:
//   1. open a connection if there is none (the last one broke);
//   2. run the command; a reply, or an error reply that will not pass by itself, is the result;
//   3. on a lost connection, a timeout, or a passing error reply (LOADING while Redis reads its
//      append-only file after a restart), wait the backoff (initial_backoff_ms, doubling up to
//      max_backoff_ms) and go to 1;
//   4. after the last attempt, UNAVAILABLE naming host:port and the last error.
// A command whose connection broke after Redis ran it but before its reply arrived runs twice.
// That is harmless for every operation but ListPush (SET, HSET, DEL and HDEL are idempotent; a
// repeated SetIfAbsent reports false, as if another writer had won, and left the value that this
// call wrote); a ListPush may append its value twice, so lists must tolerate duplicates.
//
// Durability is the server's: only a server run with `appendonly yes` and `appendfsync always`
// keeps every acknowledged write across a crash (Redis 7.0 has no WAITAOF to ask per write).
//
// Thread-safety: thread-safe. One mutex guards the connection and is held for a whole command,
// retries and backoff included, so callers queue behind a command that waits for Redis to return.
class RedisStore : public Store {
 public:
  // Connects and PINGs, with the retries above. INVALID_ARGUMENT for options out of range,
  // UNAVAILABLE naming host:port when Redis cannot be reached.
  static StatusOr<std::unique_ptr<RedisStore>> Connect(const RedisOptions& options);

  RedisStore(const RedisStore&) = delete;
  RedisStore& operator=(const RedisStore&) = delete;

  StatusOr<std::optional<std::string>> Get(const std::string& key) override;
  Status Set(const std::string& key, const std::string& value) override;
  StatusOr<bool> SetIfAbsent(const std::string& key, const std::string& value) override;
  Status Delete(const std::string& key) override;
  Status HashSet(const std::string& key, const std::string& field, const std::string& value) override;
  StatusOr<std::map<std::string, std::string>> HashGetAll(const std::string& key) override;
  Status HashDelete(const std::string& key, const std::string& field) override;
  Status ListPush(const std::string& key, const std::string& value) override;
  StatusOr<std::vector<std::string>> ListRange(const std::string& key) override;
  StatusOr<std::vector<std::string>> Keys(const std::string& prefix) override;
  Status Ping() override;

  const RedisOptions& options() const { return options_; }

 private:
  explicit RedisStore(RedisOptions options) : options_(std::move(options)) {}

  // Runs one command with the reconnects and retries of the class comment.
  StatusOr<RedisReply> Run(const std::vector<std::string>& args);
  // One attempt: opens a connection when there is none, then runs the command. Requires mu_.
  StatusOr<RedisReply> TryOnce(const std::vector<std::string>& args);

  const RedisOptions options_;
  std::mutex mu_;
  std::unique_ptr<RedisConnection> connection_;  // null until opened and after it broke; guarded by mu_
};

}  // namespace dtm
