// What the shared Store suite (store_test.cc) cannot say about SqliteStore: that its data outlives
// the object, that one file has one owner, and that a path which is not a dtm store is refused
// with its reason and left untouched.
#include "common/sqlite_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "common/store_url.h"
#include "tests/common/temp_dir.h"

namespace dtm {
namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(SqliteStoreTest, EveryTypeSurvivesClosingAndReopening) {
  TempDir dir;
  const std::string path = dir.path() + "/s.sqlite";
  {
    auto store = SqliteStore::Open(path);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    ASSERT_TRUE((*store)->Set("s", std::string("a\0b", 3)).ok());
    ASSERT_TRUE((*store)->HashSet("h", "f", "v").ok());
    ASSERT_TRUE((*store)->ListPush("l", "1").ok());
    ASSERT_TRUE((*store)->ListPush("l", "2").ok());
    ASSERT_TRUE((*store)->ListTrimFront("l", 1).ok());
  }
  auto store = SqliteStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->Get("s").value(), std::optional<std::string>(std::string("a\0b", 3)));
  EXPECT_EQ((*store)->HashGetAll("h").value(), (std::map<std::string, std::string>{{"f", "v"}}));
  // Sequence numbers continue after a reopen: a push lands after what stayed.
  ASSERT_TRUE((*store)->ListPush("l", "3").ok());
  EXPECT_EQ((*store)->ListRange("l").value(), (std::vector<std::string>{"2", "3"}));
  EXPECT_EQ((*store)->Keys("").value(), (std::vector<std::string>{"h", "l", "s"}));
}

TEST(SqliteStoreTest, ASecondOwnerIsRefusedWithTheHoldersPidAndAdmittedOnceItIsGone) {
  TempDir dir;
  const std::string path = dir.path() + "/s.sqlite";
  auto first = SqliteStore::Open(path);
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  auto second = SqliteStore::Open(path);
  ASSERT_EQ(second.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(second.status().message().find("in use by process " + std::to_string(getpid())), std::string::npos)
      << second.status().message();
  first->reset();
  EXPECT_TRUE(SqliteStore::Open(path).ok());
}

TEST(SqliteStoreTest, TheOwnerLockDiesWithAKilledProcessAndWhatItCommittedStays) {
  TempDir dir;
  const std::string path = dir.path() + "/s.sqlite";
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready[0]);
    auto store = SqliteStore::Open(path);
    if (!store.ok() || !(*store)->Set("committed", "yes").ok()) _exit(1);
    (void)!write(ready[1], "x", 1);
    pause();  // holds the lock until killed
    _exit(0);
  }
  close(ready[1]);  // so that a child that failed ends the read below instead of hanging it
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1) << "the child could not open the store and write";
  EXPECT_EQ(SqliteStore::Open(path).status().code(), StatusCode::kFailedPrecondition);
  kill(child, SIGKILL);
  int status = 0;
  waitpid(child, &status, 0);
  auto store = SqliteStore::Open(path);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->Get("committed").value(), std::optional<std::string>("yes"));
}

TEST(SqliteStoreTest, AFolderOrADeviceIsNotAStore) {
  TempDir dir;
  auto folder = SqliteStore::Open(dir.path());
  EXPECT_EQ(folder.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(folder.status().message().find("not a regular file"), std::string::npos) << folder.status().message();
  auto zero = SqliteStore::Open("/dev/zero");
  EXPECT_EQ(zero.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(zero.status().message().find("/dev/zero"), std::string::npos) << zero.status().message();
}

TEST(SqliteStoreTest, AFileThatIsNotADatabaseIsRefusedAndLeftAsItWas) {
  TempDir dir;
  const std::string path = dir.path() + "/notes.txt";
  const std::string text = "my notes, not a database\n" + std::string(5000, 'x');
  std::ofstream(path, std::ios::binary) << text;
  auto store = SqliteStore::Open(path);
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(store.status().message().find("not an SQLite database"), std::string::npos) << store.status().message();
  EXPECT_EQ(ReadAll(path), text);
}

// Runs `sql` on a database at `path` made by another program.
void MakeForeignDatabase(const std::string& path, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
  sqlite3_close(db);
}

TEST(SqliteStoreTest, AnotherProgramsDatabaseIsRefusedAndKeepsItsTables) {
  TempDir dir;
  const std::string tables = dir.path() + "/photos.sqlite";
  MakeForeignDatabase(tables, "CREATE TABLE photos(id INTEGER); INSERT INTO photos VALUES (7);");
  auto store = SqliteStore::Open(tables);
  EXPECT_EQ(store.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(store.status().message().find("another program's SQLite database (it has table 'photos')"),
            std::string::npos)
      << store.status().message();
  // An empty database with another program's id is refused too, before any table is made.
  const std::string stamped = dir.path() + "/stamped.sqlite";
  MakeForeignDatabase(stamped, "PRAGMA application_id = 42;");
  auto other = SqliteStore::Open(stamped);
  EXPECT_EQ(other.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(other.status().message().find("application_id 42"), std::string::npos) << other.status().message();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(tables.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM sqlite_master", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 1);  // photos alone: nothing of dtm's was added
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST(SqliteStoreTest, StoreUrlsNameEachStoreAndABadOneIsNamed) {
  TempDir dir;
  auto sqlite = OpenStoreUrl("sqlite://" + dir.path() + "/u.sqlite");
  ASSERT_TRUE(sqlite.ok()) << sqlite.status().ToString();
  EXPECT_NE(dynamic_cast<SqliteStore*>(sqlite->get()), nullptr);
  EXPECT_TRUE(OpenStoreUrl("memory").ok());
  auto bad = OpenStoreUrl("postgres://db");
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("postgres://db"), std::string::npos);
  EXPECT_EQ(OpenStoreUrl("sqlite://").status().code(), StatusCode::kInvalidArgument);
  // A folder that does not exist: the OS's reason, and nothing created.
  auto missing = OpenStoreUrl("sqlite://" + dir.path() + "/no/such/folder/s.sqlite");
  EXPECT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("no/such/folder"), std::string::npos) << missing.status().message();
}

}  // namespace
}  // namespace dtm
