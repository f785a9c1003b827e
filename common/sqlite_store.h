// SqliteStore: the Store in one SQLite file (WAL mode), for a single box: `dtmctl local`'s default,
// and a dtm-coordinator without Redis. Jobs and results outlive the process, a kill -9 included.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "common/store.h"

struct sqlite3;
struct sqlite3_stmt;

namespace dtm {

struct SqliteStoreOptions {
  // How long a write waits for another connection's write lock before UNAVAILABLE.
  int busy_timeout_ms = 5000;
};

// Keys, hashes and lists in three tables with Redis's type rules (see store.h); keys, fields and
// values are BLOBs, so any bytes are stored and keys sort as Redis's do (bytewise). Each operation
// is one SQLite transaction, committed with synchronous=FULL: an acknowledged write is on disk
// before the call returns, so nothing acknowledged is lost to a kill -9 or a power cut (as Redis
// with appendfsync always). Other programs reading the file (sqlite3, Python) see every committed
// write, and WAL lets them read while dtm writes.
//
// One owner per file: Open takes the file's owner lock (an flock on PATH-lock, released by the
// kernel when the process dies, kill -9 included) and refuses a file whose lock another holder has,
// since two coordinators on one file would each resume the other's jobs.
//
// Thread-safety: thread-safe; one connection, guarded by one mutex held for one operation.
class SqliteStore : public Store {
 public:
  // Opens or creates the store at `path` (its folder must exist). INVALID_ARGUMENT naming the path
  // when it is not a regular file (a folder, /dev/zero), not an SQLite database, or another
  // program's database; FAILED_PRECONDITION when another process holds its owner lock (the
  // message names that process); UNAVAILABLE when it cannot be opened (permissions, disk).
  static StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path, SqliteStoreOptions options = {});
  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  StatusOr<std::optional<std::string>> Get(const std::string& key) override;
  Status Set(const std::string& key, const std::string& value) override;
  StatusOr<bool> SetIfAbsent(const std::string& key, const std::string& value) override;
  Status Delete(const std::string& key) override;
  StatusOr<std::vector<bool>> Exist(const std::vector<std::string>& keys) override;
  Status HashSet(const std::string& key, const std::string& field, const std::string& value) override;
  StatusOr<std::map<std::string, std::string>> HashGetAll(const std::string& key) override;
  Status HashDelete(const std::string& key, const std::string& field) override;
  Status ListPush(const std::string& key, const std::string& value) override;
  StatusOr<std::vector<std::string>> ListRange(const std::string& key) override;
  Status ListTrimFront(const std::string& key, size_t count) override;
  StatusOr<std::vector<std::string>> Keys(const std::string& prefix) override;
  Status Ping() override;

  const std::string& path() const { return path_; }

 private:
  class Statement;
  class Transaction;
  enum class Type { kString = 1, kHash = 2, kList = 3 };

  SqliteStore(std::string path, sqlite3* db, int lock_fd);
  // Refuses a file that is not a dtm store. Requires mu_.
  Status CheckApplication();
  Status CreateSchema();
  // The cached prepared statement for `sql`. Requires mu_.
  StatusOr<Statement> Prepare(const char* sql);
  // The type of `key`, nullopt when absent; FAILED_PRECONDITION when it is not `expected` (unless
  // `expected` is nullopt). Requires mu_.
  StatusOr<std::optional<Type>> TypeOf(const std::string& key, std::optional<Type> expected);
  // Removes `key` from every table. Requires mu_ and a transaction.
  Status DeleteLocked(const std::string& key);
  // The status for SQLite result `rc` of `what`, with the connection's message. Requires mu_.
  Status Error(int rc, const std::string& what) const;

  const std::string path_;
  std::mutex mu_;
  sqlite3* db_;                                   // guarded by mu_
  std::map<std::string, sqlite3_stmt*> cache_;    // guarded by mu_; SQL text -> prepared statement
  int lock_fd_;                                   // the owner lock's file, open for the store's life
};

}  // namespace dtm
