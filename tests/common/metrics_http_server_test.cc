#include "common/metrics_http_server.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

namespace dtm {
namespace {

class MetricsHttpServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    registry_ = std::make_shared<prometheus::Registry>();
    prometheus::BuildCounter()
        .Name("dtm_test_leases_total")
        .Help("Leases granted.")
        .Register(*registry_)
        .Add({{"outcome", "granted"}})
        .Increment(3);
    prometheus::BuildGauge()
        .Name("dtm_test_queue_depth_tasks")
        .Help("Tasks waiting.")
        .Register(*registry_)
        .Add({{"queue", "shards"}})
        .Set(7.5);
    StatusOr<std::unique_ptr<MetricsHttpServer>> server = MetricsHttpServer::Start(registry_, "127.0.0.1", 0);
    ASSERT_TRUE(server.ok()) << server.status().ToString();
    server_ = std::move(server).value();
  }

  httplib::Result GetPath(const std::string& path) {
    httplib::Client client("127.0.0.1", server_->port());
    client.set_connection_timeout(2);
    client.set_read_timeout(2);
    return client.Get(path.c_str());
  }

  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<MetricsHttpServer> server_;
};

TEST_F(MetricsHttpServerTest, ServesEverySeriesWithLabelsAndValuesInTextFormat) {
  EXPECT_GT(server_->port(), 0);
  httplib::Result result = GetPath("/metrics");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
  EXPECT_NE(result->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  const std::string& body = result->body;
  EXPECT_NE(body.find("# TYPE dtm_test_leases_total counter"), std::string::npos) << body;
  EXPECT_NE(body.find("dtm_test_leases_total{outcome=\"granted\"} 3"), std::string::npos) << body;
  EXPECT_NE(body.find("# TYPE dtm_test_queue_depth_tasks gauge"), std::string::npos) << body;
  EXPECT_NE(body.find("dtm_test_queue_depth_tasks{queue=\"shards\"} 7.5"), std::string::npos) << body;
}

TEST_F(MetricsHttpServerTest, ServesValuesAsTheyAreAtTheScrape) {
  prometheus::BuildCounter().Name("dtm_test_late_total").Register(*registry_).Add({}).Increment(2);
  httplib::Result result = GetPath("/metrics");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_NE(result->body.find("dtm_test_late_total 2"), std::string::npos) << result->body;
}

TEST_F(MetricsHttpServerTest, AnswersHealthzWithOk) {
  httplib::Result result = GetPath("/healthz");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 200);
  EXPECT_EQ(result->body, "ok");
}

TEST_F(MetricsHttpServerTest, AnswersOtherPathsWith404) {
  httplib::Result result = GetPath("/other");
  ASSERT_TRUE(result) << httplib::to_string(result.error());
  EXPECT_EQ(result->status, 404);
}

TEST_F(MetricsHttpServerTest, BindingAPortInUseIsUnavailableNamingIt) {
  StatusOr<std::unique_ptr<MetricsHttpServer>> second =
      MetricsHttpServer::Start(registry_, "127.0.0.1", server_->port());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(second.status().message().find("127.0.0.1:" + std::to_string(server_->port())),
            std::string::npos);
}

TEST_F(MetricsHttpServerTest, StopsServingWhenDestroyed) {
  const int port = server_->port();
  server_.reset();
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(1);
  EXPECT_FALSE(client.Get("/healthz"));
}

TEST_F(MetricsHttpServerTest, IdleConnectionsDoNotStarveAScrape) {
  // Clients that connect and send nothing, more than httplib's default pool of 8 threads.
  std::vector<int> idle;
  for (int i = 0; i < 16; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(server_->port()));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    idle.push_back(fd);
  }
  httplib::Result scrape = GetPath("/metrics");
  ASSERT_TRUE(scrape) << "the scrape timed out behind " << idle.size() << " idle connections";
  EXPECT_EQ(scrape->status, 200);
  for (int fd : idle) ::close(fd);
}

TEST(MetricsHttpServerListenTest, TakesAHostPortAddressAndRefusesAnythingElse) {
  auto registry = std::make_shared<prometheus::Registry>();
  auto server = MetricsHttpServer::Listen(registry, "127.0.0.1:0");
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  EXPECT_GT((*server)->port(), 0);
  for (const std::string bad : {"127.0.0.1", "127.0.0.1:http", "127.0.0.1:70000", ":9100"}) {
    auto refused = MetricsHttpServer::Listen(registry, bad);
    ASSERT_FALSE(refused.ok()) << bad;
    EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(refused.status().message().find("'" + bad + "'"), std::string::npos) << refused.status().message();
  }
}

}  // namespace
}  // namespace dtm
