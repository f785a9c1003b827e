// RedisTestServer: a throwaway redis-server for integration tests.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace dtm {

// Runs `redis-server` as a child process on a free loopback port, in a fresh temporary directory,
// with the settings that make every acknowledged write durable (`--appendonly yes --appendfsync
// always`, no RDB snapshots). Stop() or Kill() and Restart() keep the directory and the port, so a
// test can take Redis away from a client and bring it back with its data. The destructor kills the
// server and removes the directory. The child is also killed when the thread that last started it
// ends (PR_SET_PDEATHSIG, so that a crashed test leaves no server behind): call Start() and
// Restart() on the test's main thread.
// The binary is $DTM_REDIS_SERVER, else /usr/bin/redis-server, else `redis-server` on the PATH.
//
// Thread-safety: not thread-safe; one test thread drives it.
class RedisTestServer {
 public:
  // FAILED_PRECONDITION when no redis-server binary exists (tests then skip); UNAVAILABLE when it
  // does not answer PING within 10 s. `extra_args` go on its command line (e.g. --requirepass pw).
  static StatusOr<std::unique_ptr<RedisTestServer>> Start(std::vector<std::string> extra_args = {});

  ~RedisTestServer();
  RedisTestServer(const RedisTestServer&) = delete;
  RedisTestServer& operator=(const RedisTestServer&) = delete;

  // Shuts the server down as an operator would (SIGTERM) and waits for it to exit.
  void Stop();
  // Kills the server as a crash would (SIGKILL): only what is already in its append-only file lives.
  void Kill();
  // Starts the server again on the same directory and port and waits until it answers PING.
  Status Restart();

  int port() const { return port_; }
  const std::string& dir() const { return dir_; }
  // "redis://127.0.0.1:<port>".
  std::string url() const;

 private:
  RedisTestServer(std::string binary, std::string dir, int port, std::vector<std::string> extra_args)
      : binary_(std::move(binary)), dir_(std::move(dir)), port_(port), extra_args_(std::move(extra_args)) {}

  Status Launch();
  Status WaitUntilReady();
  void Signal(int signal);

  const std::string binary_;
  const std::string dir_;
  const int port_;
  const std::vector<std::string> extra_args_;
  pid_t pid_ = -1;  // -1 when not running
};

}  // namespace dtm
