// The Store that a `--store` URL names, so that every binary takes the same three forms:
//   memory          InMemoryStore: nothing survives the process
//   redis://...     RedisStore, `redis://[:password@]host[:port][/db]` (common/redis_options.h)
//   sqlite://PATH   SqliteStore in the file PATH (created when absent; its folder must exist);
//                   sqlite:///abs/path and sqlite://relative/path (against the working directory)
#pragma once

#include <memory>
#include <string>

#include "common/redis_options.h"
#include "common/status.h"
#include "common/store.h"

namespace dtm {

// The file of a sqlite:// URL; INVALID_ARGUMENT when `url` is not one or names no file.
StatusOr<std::string> SqlitePathOfUrl(const std::string& url);

// Opens the store `url` names; a redis:// URL takes its timeouts and retries from `redis`.
// INVALID_ARGUMENT naming the URL when it has none of the forms above; otherwise the store's own
// errors (SqliteStore::Open, RedisStore::Connect).
StatusOr<std::unique_ptr<Store>> OpenStoreUrl(const std::string& url, const RedisOptions& redis = {});

}  // namespace dtm
