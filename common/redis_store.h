// RedisStore: the Store on a Redis server, which holds the coordinator's durable state.
#pragma once

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/redis_connection.h"
#include "common/redis_options.h"
#include "common/status.h"
#include "common/store.h"

namespace dtm {

// Runs each Store operation as one Redis command (Exist: one pipeline) on a connection of its own,
// taken from a small pool, so that threads never wait for each other's commands. While Redis is up a
// command is tried at most 1 + max_retries times:
//   1. take an idle connection, or open one;
//   2. run the command; a reply, or an error reply that will not pass by itself, is the result;
//   3. on a lost connection, a timeout, or a passing error reply (LOADING while Redis reads its
//      append-only file after a restart), drop the connection, wait the backoff
//      (initial_backoff_ms, doubling up to max_backoff_ms) and go to 1;
//   4. after the last attempt, UNAVAILABLE naming host:port and the last error, and Redis counts
//      as down.
// While Redis is down, a command fails at once with UNAVAILABLE, except one attempt (no retries)
// per outage_probe_interval_ms, whose success ends the outage. So no caller waits more than one
// command timeout for a Redis that is gone, and a daemon stays responsive through an outage.
// A command whose connection broke after Redis ran it but before its reply arrived runs twice.
// That is harmless for every operation but ListPush (SET, HSET, DEL and HDEL are idempotent; a
// repeated SetIfAbsent reports false, as if another writer had won, and left the value that this
// call wrote); a ListPush may append its value twice, so lists must tolerate duplicates.
//
// Durability is the server's: only a server run with `appendonly yes` and `appendfsync always`
// keeps every acknowledged write across a crash (Redis 7.0 has no WAITAOF to ask per write).
//
// Thread-safety: thread-safe. A mutex guards the pool and the outage state, and is never held
// across I/O or a backoff wait.
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
  Status ListTrimFront(const std::string& key, size_t count) override;
  StatusOr<std::vector<std::string>> Keys(const std::string& prefix) override;
  StatusOr<std::vector<bool>> Exist(const std::vector<std::string>& keys) override;
  Status Ping() override;

  const RedisOptions& options() const { return options_; }
  // False from the end of a command that failed every retry until a command succeeds again.
  bool up() const;

 private:
  using Steady = std::chrono::steady_clock;

  explicit RedisStore(RedisOptions options) : options_(std::move(options)) {}

  // Runs one command with the retries and the outage rule of the class comment.
  StatusOr<RedisReply> Run(const std::vector<std::string>& args);
  // The same for any use of one connection (a command or a pipeline).
  template <typename T, typename F>
  StatusOr<T> RunOn(F&& use);
  // How many attempts the next command may make now: 1 + max_retries while up, 1 when down and a
  // probe is due (this caller makes it), 0 when down otherwise.
  int AttemptsAllowed();
  void NoteOutcome(bool reached, const Status& error);
  StatusOr<std::unique_ptr<RedisConnection>> Checkout();
  void Checkin(std::unique_ptr<RedisConnection> connection);

  const RedisOptions options_;
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<RedisConnection>> idle_;  // guarded by mu_
  bool down_ = false;                                    // guarded by mu_
  Steady::time_point down_since_;                        // guarded by mu_
  Steady::time_point next_probe_;                        // guarded by mu_
  std::string last_error_;                               // guarded by mu_
};

}  // namespace dtm
