// RedisOptions: where the Redis store connects and how hard it tries; and the redis:// URL form.
#pragma once

#include <optional>
#include <string>

#include "common/status.h"

namespace dtm {

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::optional<std::string> password;  // sent with AUTH on every (re)connection when set
  int db = 0;                           // sent with SELECT on every (re)connection when not 0
  int connect_timeout_ms = 2000;
  // A command that gets no reply within this time counts as a lost connection and is retried.
  int command_timeout_ms = 5000;
  // Retries after the first attempt of one command while Redis is up; with the backoff below the
  // defaults wait 0.05 + 0.1 + 0.2 + 0.4 s, 0.75 s in all, before reporting UNAVAILABLE (a blip
  // passes unnoticed; an outage is reported within a second, see RedisStore).
  int max_retries = 4;
  int initial_backoff_ms = 50;
  int max_backoff_ms = 2000;
  // Once a command has failed every retry, Redis counts as down: commands then fail at once with
  // UNAVAILABLE, but for one attempt per this interval, which finds out when it is back.
  int outage_probe_interval_ms = 1000;
  // Connections kept open for reuse; as many more are opened as threads run commands at once.
  int pool_size = 4;

  // "host:port", the form every error message names the server by.
  std::string Address() const;
};

// Parses `redis://[:password@]host[:port][/db]` (port 6379 and db 0 when left out; an IPv6 host in
// brackets) into `options`' host, port, password and db, leaving its timeouts and retries as they
// are. INVALID_ARGUMENT naming the URL when it does not have that form.
StatusOr<RedisOptions> ParseRedisUrl(const std::string& url, RedisOptions options = {});

}  // namespace dtm
