// One suite, run against every Store: InMemoryStore, SqliteStore in a fresh file and RedisStore on a
// real redis-server, so that the in-memory store that unit tests rely on and the SQLite store of a
// single box behave as Redis does.
#include "common/store.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "common/in_memory_store.h"
#include "common/redis_store.h"
#include "common/redis_test_server.h"
#include "common/sqlite_store.h"
#include "tests/common/temp_dir.h"

namespace dtm {
namespace {

using Hash = std::map<std::string, std::string>;
using Strings = std::vector<std::string>;

template <typename T>
class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if constexpr (std::is_same_v<T, RedisStore>) {
      StatusOr<std::unique_ptr<RedisTestServer>> server = RedisTestServer::Start();
      if (server.status().code() == StatusCode::kFailedPrecondition)
        GTEST_SKIP() << server.status().ToString();
      ASSERT_TRUE(server.ok()) << server.status().ToString();
      server_ = std::move(server).value();
      RedisOptions options;
      options.port = server_->port();
      StatusOr<std::unique_ptr<RedisStore>> store = RedisStore::Connect(options);
      ASSERT_TRUE(store.ok()) << store.status().ToString();
      store_ = std::move(store).value();
    } else if constexpr (std::is_same_v<T, SqliteStore>) {
      StatusOr<std::unique_ptr<SqliteStore>> store = SqliteStore::Open(dir_.path() + "/store.sqlite");
      ASSERT_TRUE(store.ok()) << store.status().ToString();
      store_ = std::move(store).value();
    } else {
      store_ = std::make_unique<T>();
    }
  }

  // Declared before store_, so destroyed after it.
  TempDir dir_;
  std::unique_ptr<RedisTestServer> server_;
  std::unique_ptr<Store> store_;
};

struct StoreName {
  template <typename T>
  static std::string GetName(int) {
    if (std::is_same_v<T, RedisStore>) return "RedisStore";
    return std::is_same_v<T, SqliteStore> ? "SqliteStore" : "InMemoryStore";
  }
};

using StoreTypes = ::testing::Types<InMemoryStore, SqliteStore, RedisStore>;
TYPED_TEST_SUITE(StoreTest, StoreTypes, StoreName);

// Bytes that C strings and text protocols get wrong: NUL, CR LF, high bytes.
const std::string kBinary("a\0b\r\n\xff\x00z", 8);

TYPED_TEST(StoreTest, PingSucceeds) { EXPECT_TRUE(this->store_->Ping().ok()); }

TYPED_TEST(StoreTest, GetOfAMissingKeyIsNullopt) {
  StatusOr<std::optional<std::string>> value = this->store_->Get("missing");
  ASSERT_TRUE(value.ok()) << value.status().ToString();
  EXPECT_FALSE(value->has_value());
}

TYPED_TEST(StoreTest, GetReturnsWhatSetStoredAndSetReplacesIt) {
  ASSERT_TRUE(this->store_->Set("k", "first").ok());
  EXPECT_EQ(this->store_->Get("k").value(), std::optional<std::string>("first"));
  ASSERT_TRUE(this->store_->Set("k", "second").ok());
  EXPECT_EQ(this->store_->Get("k").value(), std::optional<std::string>("second"));
}

TYPED_TEST(StoreTest, EmptyValueIsStoredAndDistinctFromMissing) {
  ASSERT_TRUE(this->store_->Set("k", "").ok());
  EXPECT_EQ(this->store_->Get("k").value(), std::optional<std::string>(""));
}

TYPED_TEST(StoreTest, KeysFieldsAndValuesKeepNulAndHighBytes) {
  const std::string key = "key" + kBinary;
  ASSERT_TRUE(this->store_->Set(key, kBinary).ok());
  EXPECT_EQ(this->store_->Get(key).value(), std::optional<std::string>(kBinary));
  EXPECT_FALSE(this->store_->Get("key").value().has_value());  // the key is not cut at its NUL

  ASSERT_TRUE(this->store_->HashSet("h" + kBinary, kBinary, kBinary + kBinary).ok());
  EXPECT_EQ(this->store_->HashGetAll("h" + kBinary).value(), (Hash{{kBinary, kBinary + kBinary}}));

  ASSERT_TRUE(this->store_->ListPush("l" + kBinary, kBinary).ok());
  EXPECT_EQ(this->store_->ListRange("l" + kBinary).value(), Strings{kBinary});

  // A prefix that ends in NUL matches only the key that continues past it.
  EXPECT_EQ(this->store_->Keys(key.substr(0, 5)).value(), Strings{key});
}

TYPED_TEST(StoreTest, SetIfAbsentKeepsTheFirstValue) {
  EXPECT_EQ(this->store_->SetIfAbsent("result", "first").value(), true);
  EXPECT_EQ(this->store_->SetIfAbsent("result", "second").value(), false);
  EXPECT_EQ(this->store_->Get("result").value(), std::optional<std::string>("first"));
}

TYPED_TEST(StoreTest, SetIfAbsentLeavesAKeyOfAnotherTypeAlone) {
  ASSERT_TRUE(this->store_->HashSet("job", "state", "running").ok());
  EXPECT_EQ(this->store_->SetIfAbsent("job", "x").value(), false);
  EXPECT_EQ(this->store_->HashGetAll("job").value(), (Hash{{"state", "running"}}));
}

TYPED_TEST(StoreTest, SetIfAbsentSetsAgainAfterDelete) {
  ASSERT_TRUE(this->store_->SetIfAbsent("k", "a").value());
  ASSERT_TRUE(this->store_->Delete("k").ok());
  EXPECT_TRUE(this->store_->SetIfAbsent("k", "b").value());
  EXPECT_EQ(this->store_->Get("k").value(), std::optional<std::string>("b"));
}

TYPED_TEST(StoreTest, DeleteRemovesAKeyOfAnyTypeAndIgnoresAMissingOne) {
  ASSERT_TRUE(this->store_->Set("s", "v").ok());
  ASSERT_TRUE(this->store_->HashSet("h", "f", "v").ok());
  ASSERT_TRUE(this->store_->ListPush("l", "v").ok());
  for (const char* key : {"s", "h", "l", "missing"}) EXPECT_TRUE(this->store_->Delete(key).ok()) << key;
  EXPECT_EQ(this->store_->Keys("").value(), Strings{});
}

TYPED_TEST(StoreTest, ExistTellsEachKeyOfAnyTypeInOrder) {
  ASSERT_TRUE(this->store_->Set("s", "v").ok());
  ASSERT_TRUE(this->store_->HashSet("h", "f", "v").ok());
  ASSERT_TRUE(this->store_->ListPush("l", "v").ok());
  ASSERT_TRUE(this->store_->Set(kBinary, "").ok());
  StatusOr<std::vector<bool>> exist = this->store_->Exist({"missing", "s", "h", "l", kBinary, "s", "gone"});
  ASSERT_TRUE(exist.ok()) << exist.status().ToString();
  EXPECT_EQ(*exist, (std::vector<bool>{false, true, true, true, true, true, false}));
  EXPECT_TRUE(this->store_->Exist({}).value().empty());
}

TYPED_TEST(StoreTest, SetReplacesAKeyOfAnotherType) {
  ASSERT_TRUE(this->store_->ListPush("k", "v").ok());
  ASSERT_TRUE(this->store_->Set("k", "s").ok());
  EXPECT_EQ(this->store_->Get("k").value(), std::optional<std::string>("s"));
}

TYPED_TEST(StoreTest, HashGetAllReturnsEveryFieldWithItsLatestValue) {
  ASSERT_TRUE(this->store_->HashSet("job:1", "state", "queued").ok());
  ASSERT_TRUE(this->store_->HashSet("job:1", "spec", "{}").ok());
  ASSERT_TRUE(this->store_->HashSet("job:1", "state", "running").ok());
  EXPECT_EQ(this->store_->HashGetAll("job:1").value(), (Hash{{"spec", "{}"}, {"state", "running"}}));
}

TYPED_TEST(StoreTest, HashGetAllOfAMissingKeyIsEmpty) {
  StatusOr<Hash> hash = this->store_->HashGetAll("missing");
  ASSERT_TRUE(hash.ok()) << hash.status().ToString();
  EXPECT_TRUE(hash->empty());
}

TYPED_TEST(StoreTest, HashDeleteRemovesOneFieldAndTheLastFieldRemovesTheKey) {
  ASSERT_TRUE(this->store_->HashSet("h", "a", "1").ok());
  ASSERT_TRUE(this->store_->HashSet("h", "b", "2").ok());
  ASSERT_TRUE(this->store_->HashDelete("h", "a").ok());
  EXPECT_EQ(this->store_->HashGetAll("h").value(), (Hash{{"b", "2"}}));
  ASSERT_TRUE(this->store_->HashDelete("h", "b").ok());
  EXPECT_EQ(this->store_->Keys("h").value(), Strings{});
}

TYPED_TEST(StoreTest, HashDeleteOfAMissingFieldOrKeyIsOk) {
  ASSERT_TRUE(this->store_->HashSet("h", "a", "1").ok());
  EXPECT_TRUE(this->store_->HashDelete("h", "missing").ok());
  EXPECT_TRUE(this->store_->HashDelete("missing", "a").ok());
  EXPECT_EQ(this->store_->HashGetAll("h").value(), (Hash{{"a", "1"}}));
}

TYPED_TEST(StoreTest, ListRangeReturnsPushedValuesInOrderWithDuplicates) {
  for (const char* value : {"b", "a", "b", "c"}) ASSERT_TRUE(this->store_->ListPush("events", value).ok());
  EXPECT_EQ(this->store_->ListRange("events").value(), (Strings{"b", "a", "b", "c"}));
}

TYPED_TEST(StoreTest, ListTrimFrontRemovesWhatWasReadAndKeepsWhatCameLater) {
  for (const char* v : {"a", "b", "c"}) ASSERT_TRUE(this->store_->ListPush("l", v).ok());
  ASSERT_TRUE(this->store_->ListTrimFront("l", 2).ok());
  EXPECT_EQ(this->store_->ListRange("l").value(), (Strings{"c"}));
  ASSERT_TRUE(this->store_->ListTrimFront("l", 5).ok());
  EXPECT_TRUE(this->store_->Exist({"l"}).value() == std::vector<bool>{false}) << "an emptied list is gone";
  EXPECT_TRUE(this->store_->ListTrimFront("missing", 1).ok());
  ASSERT_TRUE(this->store_->Set("s", "v").ok());
  EXPECT_EQ(this->store_->ListTrimFront("s", 1).code(), StatusCode::kFailedPrecondition);
}

TYPED_TEST(StoreTest, ListRangeOfAMissingKeyIsEmpty) {
  StatusOr<Strings> list = this->store_->ListRange("missing");
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  EXPECT_TRUE(list->empty());
}

TYPED_TEST(StoreTest, KeysListsEveryKeyWithThePrefixSortedAndOnce) {
  Strings expected;
  for (int i = 0; i < 300; ++i) {
    const std::string key = "cache:" + std::to_string(i);
    ASSERT_TRUE(this->store_->Set(key, "v").ok());
    expected.push_back(key);
  }
  ASSERT_TRUE(this->store_->HashSet("cache:hash", "f", "v").ok());
  ASSERT_TRUE(this->store_->ListPush("cache:list", "v").ok());
  expected.push_back("cache:hash");
  expected.push_back("cache:list");
  ASSERT_TRUE(this->store_->Set("cach", "v").ok());
  ASSERT_TRUE(this->store_->Set("job:1", "v").ok());
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(this->store_->Keys("cache:").value(), expected);
}

TYPED_TEST(StoreTest, KeysTakesGlobCharactersInThePrefixLiterally) {
  for (const char* key : {"a*b:1", "axb:1", "a?b:1", "a[x]b:1", "ax]b:1", "a\\b:1", "ab:1"}) {
    ASSERT_TRUE(this->store_->Set(key, "v").ok());
  }
  EXPECT_EQ(this->store_->Keys("a*b").value(), Strings{"a*b:1"});
  EXPECT_EQ(this->store_->Keys("a?b").value(), Strings{"a?b:1"});
  EXPECT_EQ(this->store_->Keys("a[x]b").value(), Strings{"a[x]b:1"});
  EXPECT_EQ(this->store_->Keys("a\\b").value(), Strings{"a\\b:1"});
}

// A prefix ending in 0xff bytes has no simple upper bound (SqliteStore scans a key range).
TYPED_TEST(StoreTest, KeysWithHighBytesInThePrefixListExactlyItsKeys) {
  const std::string prefix("k\xff\xff", 3);
  const Strings inside{prefix, prefix + std::string("\0", 1), prefix + "\xff", prefix + "z"};
  for (const std::string& key : inside) ASSERT_TRUE(this->store_->Set(key, "v").ok());
  for (const char* key : {"k", "k\xfe", "k\xff", "l", "k\xff\xfe\xff"}) ASSERT_TRUE(this->store_->Set(key, "v").ok());
  Strings expected = inside;
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(this->store_->Keys(prefix).value(), expected);
  EXPECT_EQ(this->store_->Keys(std::string("\xff", 1)).value(), Strings{});
}

TYPED_TEST(StoreTest, KeysWithAnEmptyPrefixListsEveryKey) {
  ASSERT_TRUE(this->store_->Set("b", "v").ok());
  ASSERT_TRUE(this->store_->Set("a", "v").ok());
  EXPECT_EQ(this->store_->Keys("").value(), (Strings{"a", "b"}));
}

TYPED_TEST(StoreTest, OperationsOfAnotherTypeFailWithFailedPrecondition) {
  ASSERT_TRUE(this->store_->Set("s", "v").ok());
  ASSERT_TRUE(this->store_->HashSet("h", "f", "v").ok());
  EXPECT_EQ(this->store_->Get("h").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(this->store_->HashSet("s", "f", "v").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(this->store_->HashGetAll("s").status().code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(this->store_->HashDelete("s", "f").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(this->store_->ListPush("h", "v").code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(this->store_->ListRange("s").status().code(), StatusCode::kFailedPrecondition);
  // The failed operations changed nothing.
  EXPECT_EQ(this->store_->Get("s").value(), std::optional<std::string>("v"));
  EXPECT_EQ(this->store_->HashGetAll("h").value(), (Hash{{"f", "v"}}));
}

}  // namespace
}  // namespace dtm
