#include "common/store_url.h"

#include "common/in_memory_store.h"
#include "common/redis_store.h"
#include "common/sqlite_store.h"

namespace dtm {
namespace {

constexpr char kSqliteScheme[] = "sqlite://";

bool StartsWith(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

}  // namespace

StatusOr<std::string> SqlitePathOfUrl(const std::string& url) {
  if (!StartsWith(url, kSqliteScheme)) return InvalidArgumentError("store '" + url + "': not a sqlite:// URL");
  std::string path = url.substr(sizeof(kSqliteScheme) - 1);
  if (path.empty()) return InvalidArgumentError("store '" + url + "': no file after sqlite://");
  return path;
}

StatusOr<std::unique_ptr<Store>> OpenStoreUrl(const std::string& url, const RedisOptions& redis) {
  if (url == "memory") return std::unique_ptr<Store>(std::make_unique<InMemoryStore>());
  if (StartsWith(url, kSqliteScheme)) {
    ASSIGN_OR_RETURN(std::string path, SqlitePathOfUrl(url));
    ASSIGN_OR_RETURN(std::unique_ptr<SqliteStore> store, SqliteStore::Open(path));
    return std::unique_ptr<Store>(std::move(store));
  }
  if (StartsWith(url, "redis://")) {
    ASSIGN_OR_RETURN(RedisOptions options, ParseRedisUrl(url, redis));
    ASSIGN_OR_RETURN(std::unique_ptr<RedisStore> store, RedisStore::Connect(options));
    return std::unique_ptr<Store>(std::move(store));
  }
  return InvalidArgumentError("store '" + url + "': expected memory, redis://HOST[:PORT][/DB] or sqlite://PATH");
}

}  // namespace dtm
