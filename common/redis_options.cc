#include "common/redis_options.h"

#include <cctype>
#include <string>

namespace dtm {

namespace {

constexpr char kScheme[] = "redis://";

// A decimal integer in [min, max], or nullopt; std::stoi would accept "12abc" and throw on garbage.
std::optional<int> ParseInt(const std::string& text, int min, int max) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value < min || value > max) return std::nullopt;
  return value;
}

}  // namespace

std::string RedisOptions::Address() const {
  const bool ipv6 = host.find(':') != std::string::npos;
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

StatusOr<RedisOptions> ParseRedisUrl(const std::string& url, RedisOptions options) {
  auto invalid = [&url](const std::string& why) {
    return InvalidArgumentError("Redis URL '" + url + "' " + why +
                                "; expected redis://[:password@]host[:port][/db]");
  };
  const std::string scheme(kScheme);
  if (url.compare(0, scheme.size(), scheme) != 0) return invalid("does not start with redis://");
  std::string rest = url.substr(scheme.size());

  // The path, if any, is the database number.
  const size_t slash = rest.find('/');
  options.db = 0;
  if (slash != std::string::npos) {
    const std::string db_text = rest.substr(slash + 1);
    if (!db_text.empty()) {
      std::optional<int> db = ParseInt(db_text, 0, 1 << 20);
      if (!db) return invalid("has a database '" + db_text + "' that is not a non-negative integer");
      options.db = *db;
    }
    rest.resize(slash);
  }

  // The last '@' ends the user info, so that a password may itself contain '@'.
  const size_t at = rest.rfind('@');
  options.password.reset();
  if (at != std::string::npos) {
    const std::string userinfo = rest.substr(0, at);
    if (userinfo.empty() || userinfo[0] != ':')
      return invalid("has a user name (only :password@ is supported)");
    options.password = userinfo.substr(1);
    rest = rest.substr(at + 1);
  }

  std::string port_text;
  if (!rest.empty() && rest[0] == '[') {
    const size_t close = rest.find(']');
    if (close == std::string::npos) return invalid("has an unclosed '[' in its host");
    options.host = rest.substr(1, close - 1);
    const std::string after = rest.substr(close + 1);
    if (!after.empty() && after[0] != ':') return invalid("has text after its IPv6 host");
    if (!after.empty()) port_text = after.substr(1);
    if (after == ":") return invalid("has an empty port");
  } else {
    const size_t colon = rest.find(':');
    options.host = rest.substr(0, colon);
    if (colon != std::string::npos) {
      port_text = rest.substr(colon + 1);
      if (port_text.empty()) return invalid("has an empty port");
    }
  }
  if (options.host.empty()) return invalid("has no host");
  options.port = 6379;
  if (!port_text.empty()) {
    std::optional<int> port = ParseInt(port_text, 1, 65535);
    if (!port) return invalid("has a port '" + port_text + "' that is not in 1..65535");
    options.port = *port;
  }
  return options;
}

}  // namespace dtm
