#include "common/redis_options.h"

#include <gtest/gtest.h>

#include <string>

namespace dtm {
namespace {

TEST(RedisOptionsTest, ParsesPasswordHostPortAndDatabase) {
  StatusOr<RedisOptions> options = ParseRedisUrl("redis://:s3cr@t@redis.dtm.svc:6380/2");
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_EQ(options->host, "redis.dtm.svc");
  EXPECT_EQ(options->port, 6380);
  EXPECT_EQ(options->password, std::optional<std::string>("s3cr@t"));
  EXPECT_EQ(options->db, 2);
}

TEST(RedisOptionsTest, DefaultsPortAndDatabaseAndHasNoPassword) {
  StatusOr<RedisOptions> options = ParseRedisUrl("redis://localhost");
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_EQ(options->host, "localhost");
  EXPECT_EQ(options->port, 6379);
  EXPECT_EQ(options->db, 0);
  EXPECT_FALSE(options->password.has_value());
  EXPECT_EQ(ParseRedisUrl("redis://h:1/").value().db, 0);
}

TEST(RedisOptionsTest, ParsesABracketedIpv6Host) {
  StatusOr<RedisOptions> options = ParseRedisUrl("redis://[::1]:7000");
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_EQ(options->host, "::1");
  EXPECT_EQ(options->port, 7000);
  EXPECT_EQ(options->Address(), "[::1]:7000");
}

TEST(RedisOptionsTest, KeepsTheTimeoutsAndRetriesOfTheGivenOptions) {
  RedisOptions base;
  base.command_timeout_ms = 123;
  base.max_retries = 7;
  StatusOr<RedisOptions> options = ParseRedisUrl("redis://h:1", base);
  ASSERT_TRUE(options.ok()) << options.status().ToString();
  EXPECT_EQ(options->command_timeout_ms, 123);
  EXPECT_EQ(options->max_retries, 7);
}

TEST(RedisOptionsTest, RejectsMalformedUrlsNamingThem) {
  for (const std::string url : {"http://h:1", "h:1", "redis://", "redis://:1", "redis://h:", "redis://h:0",
                                "redis://h:65536", "redis://h:12ab", "redis://h:1/x", "redis://h:1/-1",
                                "redis://user:pw@h:1", "redis://[::1", "redis://[::1]x"}) {
    StatusOr<RedisOptions> options = ParseRedisUrl(url);
    ASSERT_FALSE(options.ok()) << url;
    EXPECT_EQ(options.status().code(), StatusCode::kInvalidArgument) << url;
    EXPECT_NE(options.status().message().find("'" + url + "'"), std::string::npos)
        << options.status().message();
  }
}

TEST(RedisOptionsTest, AddressIsHostColonPort) {
  RedisOptions options;
  options.host = "10.0.0.5";
  options.port = 6390;
  EXPECT_EQ(options.Address(), "10.0.0.5:6390");
}

}  // namespace
}  // namespace dtm
