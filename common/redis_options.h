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
  // Retries after the first attempt of one command; with the backoff below the defaults wait about
  // 0.05 + 0.1 + 0.2 + ... + 2 s, some 9 s in all, before reporting UNAVAILABLE.
  int max_retries = 10;
  int initial_backoff_ms = 50;
  int max_backoff_ms = 2000;

  // "host:port", the form every error message names the server by.
  std::string Address() const;
};

// Parses `redis://[:password@]host[:port][/db]` (port 6379 and db 0 when left out; an IPv6 host in
// brackets) into `options`' host, port, password and db, leaving its timeouts and retries as they
// are. INVALID_ARGUMENT naming the URL when it does not have that form.
StatusOr<RedisOptions> ParseRedisUrl(const std::string& url, RedisOptions options = {});

}  // namespace dtm
