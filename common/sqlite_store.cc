#include "common/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <utility>

namespace dtm {
namespace {

// PRAGMA application_id of a dtm store ("dtm1"), so that another program's database is refused
// instead of being written into.
constexpr int kApplicationId = 0x64746d31;
constexpr int kSchemaVersion = 1;

// Every table is keyed by BLOBs, compared bytewise (memcmp), which is the order Redis and
// std::string use. `entries` holds one row per existing key: its type and, for a string, its value.
constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS entries(key BLOB PRIMARY KEY, type INTEGER NOT NULL, value BLOB) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hash_fields(key BLOB, field BLOB, value BLOB NOT NULL,
                                       PRIMARY KEY(key, field)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS list_items(key BLOB, seq INTEGER, value BLOB NOT NULL,
                                      PRIMARY KEY(key, seq)) WITHOUT ROWID;
)sql";

const char* TypeName(int type) {
  switch (type) {
    case 1: return "string";
    case 2: return "hash";
    case 3: return "list";
    default: return "unknown type";
  }
}

// The smallest string greater than every string that starts with `prefix`; nullopt when there is
// none (the prefix is all 0xff bytes, or empty).
std::optional<std::string> PrefixEnd(std::string prefix) {
  while (!prefix.empty() && static_cast<unsigned char>(prefix.back()) == 0xff) prefix.pop_back();
  if (prefix.empty()) return std::nullopt;
  prefix.back() = static_cast<char>(static_cast<unsigned char>(prefix.back()) + 1);
  return prefix;
}

// Takes the owner lock of the store at `path`: -1 and the reason when another process holds it.
StatusOr<int> TakeOwnerLock(const std::string& path) {
  const std::string lock_path = path + "-lock";
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return UnavailableError(lock_path + ": " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char pid[32] = {};
    ssize_t n = ::pread(fd, pid, sizeof(pid) - 1, 0);
    ::close(fd);
    if (error != EWOULDBLOCK) return UnavailableError(lock_path + ": " + std::strerror(error));
    std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "unknown";
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    return FailedPreconditionError("store " + path + " is in use by process " + holder +
                                   " (a dtm-coordinator or dtmctl local; one per store file): stop it, or ask "
                                   "it with --coordinator");
  }
  // The holder's pid, for the message above; the lock itself is the flock, not the file's content.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // Only the message of a refused second opener loses its pid; the lock holds.
  }
  return fd;
}

}  // namespace

// A prepared statement from the cache, reset and cleared of its bindings when it goes out of scope.
class SqliteStore::Statement {
 public:
  explicit Statement(sqlite3_stmt* stmt) : stmt_(stmt) {}
  Statement(Statement&& other) noexcept : stmt_(std::exchange(other.stmt_, nullptr)) {}
  Statement& operator=(Statement&&) = delete;
  ~Statement() {
    if (stmt_ == nullptr) return;
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }

  // Binds `bytes` as a BLOB to parameter `index` (1-based); SQLite copies them.
  Statement& Bind(int index, const std::string& bytes) {
    // A zero-length BLOB needs a non-null pointer, or SQLite binds NULL.
    sqlite3_bind_blob64(stmt_, index, bytes.empty() ? "" : bytes.data(), bytes.size(), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& BindInt(int index, int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  // SQLITE_ROW, SQLITE_DONE or an error code.
  int Step() { return sqlite3_step(stmt_); }
  std::string Blob(int column) const {
    const void* data = sqlite3_column_blob(stmt_, column);
    const int size = sqlite3_column_bytes(stmt_, column);
    return data == nullptr ? std::string() : std::string(static_cast<const char*>(data), static_cast<size_t>(size));
  }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }

 private:
  sqlite3_stmt* stmt_;
};

// BEGIN IMMEDIATE (the write lock up front, so that a busy database fails at the start and never
// half way) ... COMMIT; rolled back unless committed.
class SqliteStore::Transaction {
 public:
  explicit Transaction(SqliteStore* store) : store_(store) {}
  ~Transaction() {
    if (open_) sqlite3_exec(store_->db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Status Begin() {
    int rc = sqlite3_exec(store_->db_, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return store_->Error(rc, "begin");
    open_ = true;
    return OkStatus();
  }
  Status Commit() {
    int rc = sqlite3_exec(store_->db_, "COMMIT", nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return store_->Error(rc, "commit");
    open_ = false;
    return OkStatus();
  }

 private:
  SqliteStore* store_;
  bool open_ = false;
};

StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path, SqliteStoreOptions options) {
  if (path.empty()) return InvalidArgumentError("sqlite store: no path");
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    return InvalidArgumentError("sqlite store " + path + ": not a regular file");
  }
  // Before the lock, whose file would otherwise be left beside someone's notes: a non-empty file
  // must start as every SQLite database does.
  if (std::ifstream in(path, std::ios::binary); in) {
    char header[16] = {};
    in.read(header, sizeof header);
    if (in.gcount() > 0 && (in.gcount() < 16 || std::memcmp(header, "SQLite format 3", 16) != 0)) {
      return InvalidArgumentError("sqlite store " + path + ": not an SQLite database (no SQLite header)");
    }
  }
  ASSIGN_OR_RETURN(const int lock_fd, TakeOwnerLock(path));
  sqlite3* db = nullptr;
  // NOMUTEX: mu_ serializes every use of the connection.
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    std::string message = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    ::close(lock_fd);
    return UnavailableError("sqlite store " + path + ": " + message);
  }
  sqlite3_busy_timeout(db, options.busy_timeout_ms);
  std::unique_ptr<SqliteStore> store(new SqliteStore(path, db, lock_fd));
  RETURN_IF_ERROR(store->CreateSchema());
  return store;
}

SqliteStore::SqliteStore(std::string path, sqlite3* db, int lock_fd)
    : path_(std::move(path)), db_(db), lock_fd_(lock_fd) {}

SqliteStore::~SqliteStore() {
  for (auto& [sql, stmt] : cache_) sqlite3_finalize(stmt);
  sqlite3_close(db_);
  ::close(lock_fd_);  // releases the owner lock
}

// Refuses a file that is not a dtm store: not a database, or another program's. Its statements are
// reset when it returns, as journal_mode cannot change while one is active. Requires mu_.
Status SqliteStore::CheckApplication() {
  // The first read of a file that is not a database fails here, with SQLITE_NOTADB.
  ASSIGN_OR_RETURN(Statement app_id, Prepare("PRAGMA application_id"));
  int rc = app_id.Step();
  if (rc == SQLITE_NOTADB) {
    return InvalidArgumentError("sqlite store " + path_ + ": not an SQLite database (" + sqlite3_errmsg(db_) + ")");
  }
  if (rc != SQLITE_ROW) return Error(rc, "read the application id");
  const int64_t found = app_id.Int(0);
  if (found != 0 && found != kApplicationId) {
    return InvalidArgumentError("sqlite store " + path_ + ": another program's SQLite database (application_id " +
                                std::to_string(found) + ")");
  }
  if (found == 0) {
    ASSIGN_OR_RETURN(Statement tables, Prepare("SELECT name FROM sqlite_master WHERE type = 'table' LIMIT 1"));
    rc = tables.Step();
    if (rc == SQLITE_ROW) {
      return InvalidArgumentError("sqlite store " + path_ + ": another program's SQLite database (it has table '" +
                                  tables.Blob(0) + "')");
    }
    if (rc != SQLITE_DONE) return Error(rc, "read the schema");
  }
  return OkStatus();
}

Status SqliteStore::CreateSchema() {
  std::lock_guard<std::mutex> lock(mu_);
  RETURN_IF_ERROR(CheckApplication());
  // WAL: readers (another process's `dtmctl results`) never block the writer, and a commit is one
  // append to the log. A file system without shared memory keeps the rollback journal, which is
  // slower but as safe.
  int rc = sqlite3_exec(db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, "set the journal mode");
  Transaction txn(this);
  RETURN_IF_ERROR(txn.Begin());
  rc = sqlite3_exec(db_, kSchema, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, "create the tables");
  const std::string stamp = "PRAGMA application_id=" + std::to_string(kApplicationId) +
                            "; PRAGMA user_version=" + std::to_string(kSchemaVersion) + ";";
  rc = sqlite3_exec(db_, stamp.c_str(), nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, "stamp the schema");
  return txn.Commit();
}

StatusOr<SqliteStore::Statement> SqliteStore::Prepare(const char* sql) {
  auto it = cache_.find(sql);
  if (it != cache_.end()) return Statement(it->second);
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql, -1, SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return Error(rc, "prepare");
  }
  cache_.emplace(sql, stmt);
  return Statement(stmt);
}

Status SqliteStore::Error(int rc, const std::string& what) const {
  const std::string message = "sqlite store " + path_ + ": " + what + ": " + sqlite3_errmsg(db_);
  switch (rc & 0xff) {  // the primary code of an extended one
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
      // The file is held, full or unreachable: nothing was changed, and a retry may succeed.
      return UnavailableError(message);
    default:
      return InternalError(message);
  }
}

StatusOr<std::optional<SqliteStore::Type>> SqliteStore::TypeOf(const std::string& key, std::optional<Type> expected) {
  ASSIGN_OR_RETURN(Statement stmt, Prepare("SELECT type FROM entries WHERE key = ?1"));
  int rc = stmt.Bind(1, key).Step();
  if (rc == SQLITE_DONE) return std::optional<Type>();
  if (rc != SQLITE_ROW) return Error(rc, "read the type of a key");
  const int type = static_cast<int>(stmt.Int(0));
  if (expected && type != static_cast<int>(*expected)) {
    // Same condition as Redis's WRONGTYPE reply.
    return FailedPreconditionError("key '" + key + "' does not hold a " + TypeName(static_cast<int>(*expected)) +
                                   " (it holds a " + TypeName(type) + ")");
  }
  return std::optional<Type>(static_cast<Type>(type));
}

Status SqliteStore::DeleteLocked(const std::string& key) {
  for (const char* sql : {"DELETE FROM entries WHERE key = ?1", "DELETE FROM hash_fields WHERE key = ?1",
                          "DELETE FROM list_items WHERE key = ?1"}) {
    ASSIGN_OR_RETURN(Statement stmt, Prepare(sql));
    int rc = stmt.Bind(1, key).Step();
    if (rc != SQLITE_DONE) return Error(rc, "delete a key");
  }
  return OkStatus();
}

StatusOr<std::optional<std::string>> SqliteStore::Get(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement stmt, Prepare("SELECT type, value FROM entries WHERE key = ?1"));
  int rc = stmt.Bind(1, key).Step();
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return Error(rc, "get");
  if (stmt.Int(0) != static_cast<int>(Type::kString)) {
    return FailedPreconditionError("key '" + key + "' does not hold a string (it holds a " +
                                   TypeName(static_cast<int>(stmt.Int(0))) + ")");
  }
  return std::optional<std::string>(stmt.Blob(1));
}

Status SqliteStore::Set(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  RETURN_IF_ERROR(txn.Begin());
  RETURN_IF_ERROR(DeleteLocked(key));
  ASSIGN_OR_RETURN(Statement stmt, Prepare("INSERT INTO entries(key, type, value) VALUES(?1, 1, ?2)"));
  int rc = stmt.Bind(1, key).Bind(2, value).Step();
  if (rc != SQLITE_DONE) return Error(rc, "set");
  return txn.Commit();
}

StatusOr<bool> SqliteStore::SetIfAbsent(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement stmt, Prepare("INSERT OR IGNORE INTO entries(key, type, value) VALUES(?1, 1, ?2)"));
  int rc = stmt.Bind(1, key).Bind(2, value).Step();
  if (rc != SQLITE_DONE) return Error(rc, "set if absent");
  return sqlite3_changes(db_) == 1;
}

Status SqliteStore::Delete(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  RETURN_IF_ERROR(txn.Begin());
  RETURN_IF_ERROR(DeleteLocked(key));
  return txn.Commit();
}

StatusOr<std::vector<bool>> SqliteStore::Exist(const std::vector<std::string>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<bool> exist;
  exist.reserve(keys.size());
  // One read transaction for the lot: a consistent snapshot, and no lock taken per key.
  int rc = sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return Error(rc, "begin");
  for (const std::string& key : keys) {
    StatusOr<Statement> stmt = Prepare("SELECT 1 FROM entries WHERE key = ?1");
    if (!stmt.ok()) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return stmt.status();
    }
    rc = stmt->Bind(1, key).Step();
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
      Status error = Error(rc, "exists");
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      return error;
    }
    exist.push_back(rc == SQLITE_ROW);
  }
  sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
  return exist;
}

Status SqliteStore::HashSet(const std::string& key, const std::string& field, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(std::optional<Type> type, TypeOf(key, Type::kHash));
  if (!type) {
    ASSIGN_OR_RETURN(Statement create, Prepare("INSERT INTO entries(key, type) VALUES(?1, 2)"));
    int rc = create.Bind(1, key).Step();
    if (rc != SQLITE_DONE) return Error(rc, "create a hash");
  }
  ASSIGN_OR_RETURN(Statement stmt, Prepare("INSERT OR REPLACE INTO hash_fields(key, field, value) VALUES(?1, ?2, ?3)"));
  int rc = stmt.Bind(1, key).Bind(2, field).Bind(3, value).Step();
  if (rc != SQLITE_DONE) return Error(rc, "set a hash field");
  return txn.Commit();
}

StatusOr<std::map<std::string, std::string>> SqliteStore::HashGetAll(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  std::map<std::string, std::string> fields;
  ASSIGN_OR_RETURN(std::optional<Type> type, TypeOf(key, Type::kHash));
  if (!type) return fields;
  ASSIGN_OR_RETURN(Statement stmt, Prepare("SELECT field, value FROM hash_fields WHERE key = ?1"));
  stmt.Bind(1, key);
  int rc;
  while ((rc = stmt.Step()) == SQLITE_ROW) fields.emplace(stmt.Blob(0), stmt.Blob(1));
  if (rc != SQLITE_DONE) return Error(rc, "read a hash");
  return fields;
}

Status SqliteStore::HashDelete(const std::string& key, const std::string& field) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(std::optional<Type> type, TypeOf(key, Type::kHash));
  if (!type) return OkStatus();
  ASSIGN_OR_RETURN(Statement stmt, Prepare("DELETE FROM hash_fields WHERE key = ?1 AND field = ?2"));
  int rc = stmt.Bind(1, key).Bind(2, field).Step();
  if (rc != SQLITE_DONE) return Error(rc, "delete a hash field");
  // A hash without fields does not exist.
  ASSIGN_OR_RETURN(Statement drop, Prepare("DELETE FROM entries WHERE key = ?1 AND NOT EXISTS "
                                           "(SELECT 1 FROM hash_fields WHERE key = ?1)"));
  rc = drop.Bind(1, key).Step();
  if (rc != SQLITE_DONE) return Error(rc, "delete an empty hash");
  return txn.Commit();
}

Status SqliteStore::ListPush(const std::string& key, const std::string& value) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(std::optional<Type> type, TypeOf(key, Type::kList));
  if (!type) {
    ASSIGN_OR_RETURN(Statement create, Prepare("INSERT INTO entries(key, type) VALUES(?1, 3)"));
    int rc = create.Bind(1, key).Step();
    if (rc != SQLITE_DONE) return Error(rc, "create a list");
  }
  // Sequence numbers only grow while the list exists, so elements stay in push order after a trim.
  ASSIGN_OR_RETURN(Statement stmt, Prepare("INSERT INTO list_items(key, seq, value) VALUES(?1, "
                                           "(SELECT COALESCE(MAX(seq), 0) + 1 FROM list_items WHERE key = ?1), ?2)"));
  int rc = stmt.Bind(1, key).Bind(2, value).Step();
  if (rc != SQLITE_DONE) return Error(rc, "push");
  return txn.Commit();
}

StatusOr<std::vector<std::string>> SqliteStore::ListRange(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> values;
  ASSIGN_OR_RETURN(std::optional<Type> type, TypeOf(key, Type::kList));
  if (!type) return values;
  ASSIGN_OR_RETURN(Statement stmt, Prepare("SELECT value FROM list_items WHERE key = ?1 ORDER BY seq"));
  stmt.Bind(1, key);
  int rc;
  while ((rc = stmt.Step()) == SQLITE_ROW) values.push_back(stmt.Blob(0));
  if (rc != SQLITE_DONE) return Error(rc, "read a list");
  return values;
}

Status SqliteStore::ListTrimFront(const std::string& key, size_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  Transaction txn(this);
  RETURN_IF_ERROR(txn.Begin());
  ASSIGN_OR_RETURN(std::optional<Type> type, TypeOf(key, Type::kList));
  if (!type || count == 0) return OkStatus();
  ASSIGN_OR_RETURN(Statement stmt, Prepare("DELETE FROM list_items WHERE key = ?1 AND seq IN "
                                           "(SELECT seq FROM list_items WHERE key = ?1 ORDER BY seq LIMIT ?2)"));
  int rc = stmt.Bind(1, key).BindInt(2, static_cast<int64_t>(std::min<size_t>(count, INT64_MAX))).Step();
  if (rc != SQLITE_DONE) return Error(rc, "trim a list");
  // A list without elements does not exist.
  ASSIGN_OR_RETURN(Statement drop, Prepare("DELETE FROM entries WHERE key = ?1 AND NOT EXISTS "
                                           "(SELECT 1 FROM list_items WHERE key = ?1)"));
  rc = drop.Bind(1, key).Step();
  if (rc != SQLITE_DONE) return Error(rc, "delete an empty list");
  return txn.Commit();
}

StatusOr<std::vector<std::string>> SqliteStore::Keys(const std::string& prefix) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::optional<std::string> end = PrefixEnd(prefix);
  // A range on the primary key, so that listing one job's keys reads those keys only.
  ASSIGN_OR_RETURN(Statement stmt, end ? Prepare("SELECT key FROM entries WHERE key >= ?1 AND key < ?2 ORDER BY key")
                                       : Prepare("SELECT key FROM entries WHERE key >= ?1 ORDER BY key"));
  stmt.Bind(1, prefix);
  if (end) stmt.Bind(2, *end);
  std::vector<std::string> keys;
  int rc;
  while ((rc = stmt.Step()) == SQLITE_ROW) keys.push_back(stmt.Blob(0));
  if (rc != SQLITE_DONE) return Error(rc, "list keys");
  return keys;
}

Status SqliteStore::Ping() {
  std::lock_guard<std::mutex> lock(mu_);
  ASSIGN_OR_RETURN(Statement stmt, Prepare("SELECT 1"));
  int rc = stmt.Step();
  if (rc != SQLITE_ROW) return Error(rc, "ping");
  return OkStatus();
}

}  // namespace dtm
