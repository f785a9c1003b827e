// RedisStore against a real redis-server: what the shared StoreTest suite cannot show (outages,
// restarts, concurrency, connection errors).
#include "common/redis_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/redis_test_server.h"

namespace dtm {
namespace {

using Clock = std::chrono::steady_clock;

class RedisStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StatusOr<std::unique_ptr<RedisTestServer>> server = RedisTestServer::Start();
    if (server.status().code() == StatusCode::kFailedPrecondition) GTEST_SKIP() << server.status().ToString();
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
  }

  // Options for the test server with short retries, so an outage is reported within a second.
  RedisOptions FastOptions() const {
    RedisOptions options;
    options.port = server_->port();
    options.connect_timeout_ms = 500;
    options.command_timeout_ms = 1000;
    options.max_retries = 3;
    options.initial_backoff_ms = 10;
    options.max_backoff_ms = 40;
    options.outage_probe_interval_ms = 100;
    return options;
  }

  // Pings until the store has found the server again (one probe per outage_probe_interval_ms).
  static bool WaitUntilUp(RedisStore& store) {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < give_up) {
      if (store.Ping().ok()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  std::unique_ptr<RedisStore> ConnectOrDie(const RedisOptions& options) {
    StatusOr<std::unique_ptr<RedisStore>> store = RedisStore::Connect(options);
    EXPECT_TRUE(store.ok()) << store.status().ToString();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  std::unique_ptr<RedisTestServer> server_;
};

TEST_F(RedisStoreTest, ConnectToAnUnreachableServerIsUnavailableAndNamesHostAndPort) {
  RedisOptions options = FastOptions();
  server_->Kill();  // its port is now certainly free of Redis
  const auto start = Clock::now();
  StatusOr<std::unique_ptr<RedisStore>> store = RedisStore::Connect(options);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(store.status().message().find("127.0.0.1:" + std::to_string(options.port)), std::string::npos)
      << store.status().message();
  EXPECT_NE(store.status().message().find("4 attempts"), std::string::npos) << store.status().message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
}

TEST_F(RedisStoreTest, ConnectRejectsOptionsOutOfRange) {
  RedisOptions options = FastOptions();
  options.port = 70000;
  EXPECT_EQ(RedisStore::Connect(options).status().code(), StatusCode::kInvalidArgument);
  options = FastOptions();
  options.max_retries = -1;
  EXPECT_EQ(RedisStore::Connect(options).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RedisStoreTest, CommandDuringAnOutageIsUnavailableAndDataSurvivesACrashRestart) {
  std::unique_ptr<RedisStore> store = ConnectOrDie(FastOptions());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Set("cache:baseline", std::string("tokens\0ids", 10)).ok());
  ASSERT_TRUE(store->HashSet("job:1", "state", "running").ok());
  ASSERT_TRUE(store->ListPush("job:1:events", "started").ok());
  ASSERT_TRUE(store->SetIfAbsent("result:1", "first").value());

  // A crash: only what appendfsync always already wrote to the append-only file survives.
  server_->Kill();
  const auto start = Clock::now();
  StatusOr<std::optional<std::string>> during = store->Get("cache:baseline");
  ASSERT_FALSE(during.ok());
  EXPECT_EQ(during.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(during.status().message().find(store->options().Address()), std::string::npos)
      << during.status().message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(store->Set("k", "v").code(), StatusCode::kUnavailable);

  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_TRUE(WaitUntilUp(*store));
  EXPECT_EQ(store->Get("cache:baseline").value(), std::optional<std::string>(std::string("tokens\0ids", 10)));
  EXPECT_EQ(store->HashGetAll("job:1").value(), (std::map<std::string, std::string>{{"state", "running"}}));
  EXPECT_EQ(store->ListRange("job:1:events").value(), std::vector<std::string>{"started"});
  EXPECT_FALSE(store->SetIfAbsent("result:1", "second").value());
  EXPECT_TRUE(store->Ping().ok());
}

TEST_F(RedisStoreTest, CommandSucceedsWhenTheServerReturnsWithinItsRetries) {
  RedisOptions options = FastOptions();
  options.max_retries = 20;
  options.initial_backoff_ms = 50;
  options.max_backoff_ms = 200;
  std::unique_ptr<RedisStore> store = ConnectOrDie(options);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Set("k", "v").ok());

  server_->Stop();
  // The command waits on another thread; this one restarts the server, for the server dies with the
  // thread that started it.
  StatusOr<std::optional<std::string>> value = UnavailableError("not run");
  std::thread reader([&store, &value] { value = store->Get("k"); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  Status restarted = server_->Restart();
  reader.join();
  ASSERT_TRUE(restarted.ok()) << restarted.ToString();
  ASSERT_TRUE(value.ok()) << value.status().ToString();
  EXPECT_EQ(*value, std::optional<std::string>("v"));
}

TEST_F(RedisStoreTest, DuringAnOutageCommandsFailAtOnceAndAProbeFindsTheServerBack) {
  RedisOptions options = FastOptions();
  options.outage_probe_interval_ms = 300;
  std::unique_ptr<RedisStore> store = ConnectOrDie(options);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Set("k", "v").ok());
  EXPECT_TRUE(store->up());

  server_->Kill();
  // The first command spends its retries (10 + 20 + 40 ms of backoff), then Redis counts as down.
  EXPECT_EQ(store->Get("k").status().code(), StatusCode::kUnavailable);
  EXPECT_FALSE(store->up());
  // Now commands do not wait: 200 of them take far less than one backoff round each.
  const auto start = Clock::now();
  for (int i = 0; i < 200; ++i) {
    StatusOr<std::optional<std::string>> value = store->Get("k");
    ASSERT_EQ(value.status().code(), StatusCode::kUnavailable);
    if (i == 0) {
      EXPECT_NE(value.status().message().find("unreachable for"), std::string::npos) << value.status().message();
    }
  }
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(250));

  ASSERT_TRUE(server_->Restart().ok());
  ASSERT_TRUE(WaitUntilUp(*store));
  EXPECT_TRUE(store->up());
  EXPECT_EQ(store->Get("k").value(), std::optional<std::string>("v"));
}

TEST_F(RedisStoreTest, ExistTellsEachKeyInOrderAcrossPipelines) {
  std::unique_ptr<RedisStore> store = ConnectOrDie(FastOptions());
  ASSERT_NE(store, nullptr);
  std::vector<std::string> keys;
  std::vector<bool> want;
  // 2,500 keys: three pipelines of up to a thousand; every third one exists, one as a hash.
  for (int i = 0; i < 2500; ++i) {
    keys.push_back("k" + std::to_string(i));
    want.push_back(i % 3 == 0);
    if (i == 999) {
      ASSERT_TRUE(store->HashSet(keys.back(), "f", "v").ok());
    } else if (want.back()) {
      ASSERT_TRUE(store->Set(keys.back(), "v").ok());
    }
  }
  StatusOr<std::vector<bool>> exist = store->Exist(keys);
  ASSERT_TRUE(exist.ok()) << exist.status().ToString();
  EXPECT_EQ(*exist, want);
  EXPECT_TRUE(store->Exist({}).value().empty());
}

TEST_F(RedisStoreTest, EightThreadsShareOneStore) {
  std::unique_ptr<RedisStore> store = ConnectOrDie(FastOptions());
  ASSERT_NE(store, nullptr);
  constexpr int kThreads = 8;
  constexpr int kOpsPerThread = 100;
  std::atomic<int> failures{0};
  std::atomic<int> winners{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOpsPerThread; ++i) {
        const std::string key = "t" + std::to_string(t) + ":" + std::to_string(i);
        if (!store->Set(key, key).ok() || store->Get(key).value() != std::optional<std::string>(key) ||
            !store->ListPush("shared", key).ok() || !store->HashSet("hash", key, key).ok()) {
          ++failures;
        }
        StatusOr<bool> won = store->SetIfAbsent("once:" + std::to_string(i), key);
        if (!won.ok()) ++failures;
        if (won.ok() && *won) ++winners;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(winners.load(), kOpsPerThread);  // each "once:" key accepted exactly one value
  EXPECT_EQ(store->ListRange("shared").value().size(), size_t{kThreads * kOpsPerThread});
  EXPECT_EQ(store->HashGetAll("hash").value().size(), size_t{kThreads * kOpsPerThread});
  EXPECT_EQ(store->Keys("t").value().size(), size_t{kThreads * kOpsPerThread});
}

TEST_F(RedisStoreTest, ErrorReplyCarriesRedisMessage) {
  std::unique_ptr<RedisStore> store = ConnectOrDie(FastOptions());
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Set("s", "v").ok());
  Status status = store->ListPush("s", "v");
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("WRONGTYPE"), std::string::npos) << status.message();
}

TEST_F(RedisStoreTest, DatabasesFromTheUrlAreSeparate) {
  StatusOr<RedisOptions> db1 = ParseRedisUrl(server_->url() + "/1", FastOptions());
  ASSERT_TRUE(db1.ok()) << db1.status().ToString();
  std::unique_ptr<RedisStore> store1 = ConnectOrDie(*db1);
  std::unique_ptr<RedisStore> store0 = ConnectOrDie(FastOptions());
  ASSERT_NE(store1, nullptr);
  ASSERT_NE(store0, nullptr);
  ASSERT_TRUE(store1->Set("k", "in db 1").ok());
  EXPECT_FALSE(store0->Get("k").value().has_value());
  EXPECT_EQ(store1->Get("k").value(), std::optional<std::string>("in db 1"));
}

TEST_F(RedisStoreTest, SelectingADatabaseOutOfRangeIsInvalidArgument) {
  RedisOptions options = FastOptions();
  options.db = 1000;  // redis-server has 16 databases unless configured otherwise
  EXPECT_EQ(RedisStore::Connect(options).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RedisStoreTest, AuthenticatesWithThePasswordAndIsUnauthenticatedWithoutIt) {
  StatusOr<std::unique_ptr<RedisTestServer>> secured = RedisTestServer::Start({"--requirepass", "s3cret"});
  ASSERT_TRUE(secured.ok()) << secured.status().ToString();
  RedisOptions options = FastOptions();
  options.port = (*secured)->port();

  Status no_password = RedisStore::Connect(options).status();
  EXPECT_EQ(no_password.code(), StatusCode::kUnauthenticated) << no_password.ToString();
  options.password = "wrong";
  Status wrong_password = RedisStore::Connect(options).status();
  EXPECT_EQ(wrong_password.code(), StatusCode::kUnauthenticated) << wrong_password.ToString();

  StatusOr<RedisOptions> from_url = ParseRedisUrl((*secured)->url().insert(8, ":s3cret@"), FastOptions());
  ASSERT_TRUE(from_url.ok()) << from_url.status().ToString();
  std::unique_ptr<RedisStore> store = ConnectOrDie(*from_url);
  ASSERT_NE(store, nullptr);
  EXPECT_TRUE(store->Set("k", "v").ok());
}

}  // namespace
}  // namespace dtm
