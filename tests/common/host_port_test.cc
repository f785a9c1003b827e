#include "common/host_port.h"

#include <gtest/gtest.h>

namespace dtm {
namespace {

TEST(HostPortTest, SplitsHostAndPort) {
  std::string host;
  int port = -1;
  ASSERT_TRUE(SplitHostPort("127.0.0.1:9100", &host, &port));
  EXPECT_EQ(host, "127.0.0.1");
  EXPECT_EQ(port, 9100);
  ASSERT_TRUE(SplitHostPort("0.0.0.0:0", &host, &port));
  EXPECT_EQ(host, "0.0.0.0");
  EXPECT_EQ(port, 0);
}

TEST(HostPortTest, UnwrapsBracketedIpv6Hosts) {
  std::string host;
  int port = -1;
  ASSERT_TRUE(SplitHostPort("[::1]:65535", &host, &port));
  EXPECT_EQ(host, "::1");
  EXPECT_EQ(port, 65535);
}

TEST(HostPortTest, RefusesWhatIsNotHostColonPort) {
  std::string host;
  int port = 0;
  for (const char* bad : {"localhost", "localhost:", "localhost:http", "h:65536", "h:-1", "h:12x", "h:1234567"}) {
    EXPECT_FALSE(SplitHostPort(bad, &host, &port)) << bad;
  }
}

}  // namespace
}  // namespace dtm
