// common/grpc_security over loopback: the bearer token on DtmService, TLS, mutual TLS on
// WorkerService, the start-up errors and the message-size limit, each with the exact status code a
// client sees. Certificates are made at run time with the openssl binary.
#include "common/grpc_security.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "dtm/v1/dtm_service.grpc.pb.h"
#include "dtm/v1/worker_service.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

constexpr milliseconds kCallTimeout{5000};
constexpr char kToken[] = "s3cret-token";
constexpr uint32_t kHeartbeatIntervalMs = 1234;

// Answers GetJob with the id asked for and SubmitJob with the spec echoed back (so that a large
// request makes an equally large reply); counts the calls that reach it and records whether a call
// still carried the authorization metadata.
class TestDtmService final : public v1::DtmService::Service {
 public:
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* job) override {
    ++calls;
    saw_authorization = saw_authorization || ctx->client_metadata().count("authorization") > 0;
    job->set_job_id(req->job_id());
    return grpc::Status::OK;
  }
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* req, v1::Job* job) override {
    ++calls;
    job->set_spec_yaml(req->spec_yaml());
    return grpc::Status::OK;
  }

  std::atomic<int> calls{0};
  std::atomic<bool> saw_authorization{false};
};

class TestWorkerService final : public v1::WorkerService::Service {
 public:
  grpc::Status RegisterWorker(grpc::ServerContext*, const v1::RegisterWorkerRequest*,
                              v1::RegisterWorkerResponse* reply) override {
    ++calls;
    reply->set_heartbeat_interval_ms(kHeartbeatIntervalMs);
    return grpc::Status::OK;
  }

  std::atomic<int> calls{0};
};

// Runs `command` in a shell; false (with its output in `log`) if it fails.
bool RunShell(const std::string& command, const fs::path& log) {
  return std::system((command + " >>" + log.string() + " 2>&1").c_str()) == 0;
}

void WriteFile(const fs::path& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// OpenSSL settings for a CA, a server cert for localhost/127.0.0.1 and a client cert.
constexpr char kOpensslConfig[] = R"([req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
[client_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
)";

class GrpcSecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    grpc::EnableDefaultHealthCheckService(true);
    std::string tmpl = (fs::temp_directory_path() / "dtm-grpc-security-XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = new fs::path(tmpl);
    WriteFile(Path("token"), std::string("  ") + kToken + "\n");
    WriteFile(Path("wrong-token"), "not-the-token\n");
    openssl_ok_ = std::system("openssl version >/dev/null 2>&1") == 0 && MakeCertificates();
  }

  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(*dir_, ignored);
    delete dir_;
  }

  static std::string Path(const std::string& name) { return (*dir_ / name).string(); }

  // ca signs server and client; rogue-ca signs rogue-client, a client the server must not trust.
  static bool MakeCertificates() {
    const fs::path cnf = *dir_ / "openssl.cnf";
    const fs::path log = *dir_ / "openssl.log";
    WriteFile(cnf, kOpensslConfig);
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -config " + cnf.string();
    const auto make_ca = [&](const std::string& name) {
      return RunShell("openssl req -x509 -new" + ec + " -days 2 -subj /CN=dtm-test-" + name +
                          " -extensions ca_ext -keyout " + Path(name + ".key") + " -out " +
                          Path(name + ".pem"),
                      log);
    };
    int serial = 1;
    const auto make_leaf = [&](const std::string& name, const std::string& cn, const std::string& ca,
                               const std::string& ext) {
      return RunShell("openssl req -new" + ec + " -subj /CN=" + cn + " -keyout " + Path(name + ".key") +
                          " -out " + Path(name + ".csr"),
                      log) &&
             RunShell("openssl x509 -req -days 2 -set_serial " + std::to_string(++serial) + " -in " +
                          Path(name + ".csr") + " -CA " + Path(ca + ".pem") + " -CAkey " + Path(ca + ".key") +
                          " -extfile " + cnf.string() + " -extensions " + ext + " -out " +
                          Path(name + ".pem"),
                      log);
    };
    const bool ok = make_ca("ca") && make_ca("rogue-ca") &&
                    make_leaf("server", "localhost", "ca", "server_ext") &&
                    make_leaf("client", "worker-0", "ca", "client_ext") &&
                    make_leaf("rogue-client", "worker-0", "rogue-ca", "client_ext");
    if (!ok) ADD_FAILURE() << "openssl failed:\n" << ReadFile(log);
    return ok;
  }

  ServerSecurityOptions TlsServer() const {
    ServerSecurityOptions options;
    options.tls_cert_file = Path("server.pem");
    options.tls_key_file = Path("server.key");
    return options;
  }

  ClientSecurityOptions TlsClient() const {
    ClientSecurityOptions options;
    options.tls_ca_file = Path("ca.pem");
    return options;
  }

  // Starts a server on a kernel-picked loopback port with both dtm services and the health service.
  void StartServer(const ServerSecurityOptions& options) {
    grpc::ServerBuilder builder;
    const Status status = ConfigureServer(&builder, "127.0.0.1:0", options, &port_);
    ASSERT_TRUE(status.ok()) << status.ToString();
    builder.RegisterService(&dtm_service_);
    builder.RegisterService(&worker_service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port_, 0);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + milliseconds(1000));
  }

  std::string Address() const { return "127.0.0.1:" + std::to_string(port_); }

  std::shared_ptr<grpc::Channel> Channel(const ClientSecurityOptions& options) {
    auto channel = MakeChannel(Address(), options);
    EXPECT_TRUE(channel.ok()) << channel.status().ToString();
    return channel.ok() ? *channel : nullptr;
  }

  static grpc::Status GetJob(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kCallTimeout);
    v1::GetJobRequest req;
    req.set_job_id("job-7");
    v1::Job job;
    const grpc::Status status = v1::DtmService::NewStub(channel)->GetJob(&ctx, req, &job);
    if (status.ok()) {
      EXPECT_EQ(job.job_id(), "job-7");
    }
    return status;
  }

  static grpc::Status RegisterWorker(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kCallTimeout);
    v1::RegisterWorkerRequest req;
    req.set_worker_id("worker-0");
    v1::RegisterWorkerResponse reply;
    const grpc::Status status = v1::WorkerService::NewStub(channel)->RegisterWorker(&ctx, req, &reply);
    if (status.ok()) {
      EXPECT_EQ(reply.heartbeat_interval_ms(), kHeartbeatIntervalMs);
    }
    return status;
  }

  static grpc::Status CheckHealth(const std::shared_ptr<grpc::Channel>& channel) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kCallTimeout);
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse reply;
    const grpc::Status status = grpc::health::v1::Health::NewStub(channel)->Check(&ctx, req, &reply);
    if (status.ok()) {
      EXPECT_EQ(reply.status(), grpc::health::v1::HealthCheckResponse::SERVING);
    }
    return status;
  }

  static grpc::Status SubmitJob(const std::shared_ptr<grpc::Channel>& channel, size_t spec_bytes) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, kCallTimeout);
    v1::SubmitJobRequest req;
    req.set_spec_yaml(std::string(spec_bytes, 'x'));
    v1::Job job;
    const grpc::Status status = v1::DtmService::NewStub(channel)->SubmitJob(&ctx, req, &job);
    if (status.ok()) {
      EXPECT_EQ(job.spec_yaml().size(), spec_bytes);
    }
    return status;
  }

  static fs::path* dir_;
  static bool openssl_ok_;
  TestDtmService dtm_service_;
  TestWorkerService worker_service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

// GTEST_SKIP returns from the function it is in, so this is a macro for test bodies and SetUp.
#define REQUIRE_OPENSSL() \
  if (!openssl_ok_) GTEST_SKIP() << "no usable openssl binary to make test certificates"

fs::path* GrpcSecurityTest::dir_ = nullptr;
bool GrpcSecurityTest::openssl_ok_ = false;

// ---- Without TLS, on loopback ----

TEST_F(GrpcSecurityTest, InsecureLoopbackServesEveryService) {
  StartServer(ServerSecurityOptions{});
  const auto channel = Channel(ClientSecurityOptions{});
  EXPECT_TRUE(GetJob(channel).ok());
  EXPECT_TRUE(RegisterWorker(channel).ok());
  EXPECT_TRUE(CheckHealth(channel).ok());
  EXPECT_EQ(dtm_service_.calls, 1);
  EXPECT_EQ(worker_service_.calls, 1);
}

TEST_F(GrpcSecurityTest, DtmServiceCallWithoutTokenIsUnauthenticatedAndNeverReachesTheHandler) {
  ServerSecurityOptions options;
  options.token_file = Path("token");
  StartServer(options);
  const grpc::Status status = GetJob(Channel(ClientSecurityOptions{}));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_NE(status.error_message().find("authorization"), std::string::npos) << status.error_message();
  EXPECT_EQ(dtm_service_.calls, 0);
}

TEST_F(GrpcSecurityTest, DtmServiceCallWithWrongTokenIsUnauthenticated) {
  ServerSecurityOptions options;
  options.token_file = Path("token");
  StartServer(options);
  ClientSecurityOptions client;
  client.token_file = Path("wrong-token");
  const grpc::Status status = GetJob(Channel(client));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_EQ(dtm_service_.calls, 0);
}

TEST_F(GrpcSecurityTest, DtmServiceCallWithRightTokenSucceedsAndTheTokenStopsAtTheCheck) {
  ServerSecurityOptions options;
  options.token_file = Path("token");  // "  s3cret-token\n": whitespace is not part of the token
  StartServer(options);
  ClientSecurityOptions client;
  client.token_file = Path("token");
  const grpc::Status status = GetJob(Channel(client));
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(dtm_service_.calls, 1);
  EXPECT_FALSE(dtm_service_.saw_authorization);
}

TEST_F(GrpcSecurityTest, TheTokenGuardsTheWorkerServiceTooButNotHealth) {
  ServerSecurityOptions options;
  options.token_file = Path("token");
  StartServer(options);
  const auto anonymous = Channel(ClientSecurityOptions{});
  EXPECT_TRUE(CheckHealth(anonymous).ok());
  // A caller that could register without credentials could report made-up results into the cache.
  const grpc::Status refused = RegisterWorker(anonymous);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAUTHENTICATED) << refused.error_message();
  EXPECT_EQ(worker_service_.calls, 0);
  ClientSecurityOptions worker;
  worker.token_file = Path("token");
  const grpc::Status status = RegisterWorker(Channel(worker));
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(worker_service_.calls, 1);
}

TEST_F(GrpcSecurityTest, AWorkerTokenSeparatesTheWorkerServiceFromTheClients) {
  WriteFile(Path("worker-token"), "w0rker-token\n");
  ServerSecurityOptions options;
  options.token_file = Path("token");
  options.worker_token_file = Path("worker-token");
  StartServer(options);
  ClientSecurityOptions client;
  client.token_file = Path("token");
  ClientSecurityOptions worker;
  worker.token_file = Path("worker-token");
  // Each token opens its own service only.
  EXPECT_EQ(RegisterWorker(Channel(client)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(GetJob(Channel(worker)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(RegisterWorker(Channel(worker)).ok());
  EXPECT_TRUE(GetJob(Channel(client)).ok());
  EXPECT_EQ(worker_service_.calls, 1);
  EXPECT_EQ(dtm_service_.calls, 1);
}

TEST_F(GrpcSecurityTest, MessageAboveTheLimitIsResourceExhaustedEitherWay) {
  StartServer(ServerSecurityOptions{});
  const auto channel = Channel(ClientSecurityOptions{});
  // Above gRPC's 4 MiB default both ways (the reply echoes the request): the limits were raised.
  const grpc::Status big = SubmitJob(channel, 8 << 20);
  EXPECT_TRUE(big.ok()) << big.error_code() << " " << big.error_message();

  // MakeChannel's own send limit stops it on the client...
  EXPECT_EQ(SubmitJob(channel, kMaxMessageBytes + 1).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // ...and a client without limits is stopped by the server's receive limit.
  const auto unlimited = grpc::CreateChannel(Address(), grpc::InsecureChannelCredentials());
  EXPECT_EQ(SubmitJob(unlimited, kMaxMessageBytes + 1).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(dtm_service_.calls, 1);
}

// ---- TLS ----

TEST_F(GrpcSecurityTest, TlsClientTrustingTheCaConnects) {
  REQUIRE_OPENSSL();
  StartServer(TlsServer());
  const auto channel = Channel(TlsClient());
  const grpc::Status status = GetJob(channel);
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_TRUE(RegisterWorker(channel).ok());
}

TEST_F(GrpcSecurityTest, ClientWithoutTheCaCannotConnectToTlsServer) {
  REQUIRE_OPENSSL();
  StartServer(TlsServer());
  EXPECT_EQ(GetJob(Channel(ClientSecurityOptions{})).error_code(),
            grpc::StatusCode::UNAVAILABLE);  // plaintext
  ClientSecurityOptions other_ca;
  other_ca.tls_ca_file = Path("rogue-ca.pem");
  EXPECT_EQ(GetJob(Channel(other_ca)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(dtm_service_.calls, 0);
}

TEST_F(GrpcSecurityTest, ServerNameOverrideIsWhatTheCertificateIsCheckedAgainst) {
  REQUIRE_OPENSSL();
  StartServer(TlsServer());
  ClientSecurityOptions client = TlsClient();
  client.tls_server_name = "coordinator.example";  // not in the certificate
  EXPECT_EQ(GetJob(Channel(client)).error_code(), grpc::StatusCode::UNAVAILABLE);
  client.tls_server_name = "localhost";
  const grpc::Status status = GetJob(Channel(client));
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
}

TEST_F(GrpcSecurityTest, TokenOverTlsIsChecked) {
  REQUIRE_OPENSSL();
  ServerSecurityOptions options = TlsServer();
  options.token_file = Path("token");
  StartServer(options);
  ClientSecurityOptions client = TlsClient();
  EXPECT_EQ(GetJob(Channel(client)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  client.token_file = Path("token");
  EXPECT_TRUE(GetJob(Channel(client)).ok());
}

// ---- Mutual TLS on WorkerService ----

class GrpcMutualTlsTest : public GrpcSecurityTest {
 protected:
  void SetUp() override {
    REQUIRE_OPENSSL();
    if (IsSkipped()) return;
    ServerSecurityOptions options = TlsServer();
    options.client_ca_file = Path("ca.pem");
    StartServer(options);
  }
};

TEST_F(GrpcMutualTlsTest, WorkerCallWithoutClientCertIsUnauthenticated) {
  const grpc::Status status = RegisterWorker(Channel(TlsClient()));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_EQ(worker_service_.calls, 0);
}

TEST_F(GrpcMutualTlsTest, WorkerWithCertFromUntrustedCaCannotConnect) {
  ClientSecurityOptions client = TlsClient();
  client.tls_cert_file = Path("rogue-client.pem");
  client.tls_key_file = Path("rogue-client.key");
  const grpc::Status status = RegisterWorker(Channel(client));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_EQ(worker_service_.calls, 0);
}

TEST_F(GrpcMutualTlsTest, WorkerWithGoodCertIsServed) {
  ClientSecurityOptions client = TlsClient();
  client.tls_cert_file = Path("client.pem");
  client.tls_key_file = Path("client.key");
  const grpc::Status status = RegisterWorker(Channel(client));
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_EQ(worker_service_.calls, 1);
}

TEST_F(GrpcMutualTlsTest, DtmServiceAndHealthNeedNoClientCert) {
  const auto channel = Channel(TlsClient());
  const grpc::Status status = GetJob(channel);
  EXPECT_TRUE(status.ok()) << status.error_code() << " " << status.error_message();
  EXPECT_TRUE(CheckHealth(channel).ok());
}

// ---- Start-up errors ----

TEST_F(GrpcSecurityTest, MissingCertFileIsNamed) {
  ServerSecurityOptions options;
  options.tls_cert_file = Path("no-such.pem");
  options.tls_key_file = Path("no-such.key");
  grpc::ServerBuilder builder;
  const Status status = ConfigureServer(&builder, "127.0.0.1:0", options, nullptr);
  EXPECT_EQ(status.code(), StatusCode::kNotFound);
  EXPECT_NE(status.message().find("--tls-cert"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find(Path("no-such.pem")), std::string::npos) << status.message();
}

TEST_F(GrpcSecurityTest, FileWithoutPemIsRefused) {
  ServerSecurityOptions options;
  options.tls_cert_file = Path("token");
  options.tls_key_file = Path("token");
  grpc::ServerBuilder builder;
  const Status status = ConfigureServer(&builder, "127.0.0.1:0", options, nullptr);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("holds no PEM certificate"), std::string::npos) << status.message();
}

TEST_F(GrpcSecurityTest, CertWithoutKeyIsRefused) {
  ServerSecurityOptions options;
  options.tls_cert_file = Path("server.pem");
  grpc::ServerBuilder builder;
  Status status = ConfigureServer(&builder, "127.0.0.1:0", options, nullptr);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("without --tls-key"), std::string::npos) << status.message();

  ClientSecurityOptions client = TlsClient();
  client.tls_cert_file = Path("client.pem");
  const auto channel = MakeChannel("127.0.0.1:1", client);
  EXPECT_EQ(channel.status().code(), StatusCode::kInvalidArgument);
}

TEST_F(GrpcSecurityTest, ClientCaWithoutTlsIsRefused) {
  ServerSecurityOptions options;
  options.client_ca_file = Path("ca.pem");
  grpc::ServerBuilder builder;
  const Status status = ConfigureServer(&builder, "127.0.0.1:0", options, nullptr);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("--tls-client-ca"), std::string::npos) << status.message();
}

TEST_F(GrpcSecurityTest, InsecureNonLoopbackListenIsRefusedUnlessAllowed) {
  ServerSecurityOptions options;
  grpc::ServerBuilder builder;
  const Status status = ConfigureServer(&builder, "0.0.0.0:0", options, nullptr);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("'0.0.0.0:0'"), std::string::npos) << status.message();

  options.allow_insecure = true;
  grpc::ServerBuilder allowed;
  EXPECT_TRUE(ConfigureServer(&allowed, "0.0.0.0:0", options, nullptr).ok());
}

TEST_F(GrpcSecurityTest, UnauthenticatedNonLoopbackListenIsRefusedUnlessAllowed) {
  REQUIRE_OPENSSL();
  // TLS alone encrypts, but lets anyone who reaches the port act as a client or a worker.
  ServerSecurityOptions options = TlsServer();
  grpc::ServerBuilder builder;
  const Status status = ConfigureServer(&builder, "0.0.0.0:0", options, nullptr);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("without authentication"), std::string::npos) << status.message();

  options.token_file = Path("token");
  grpc::ServerBuilder with_token;
  EXPECT_TRUE(ConfigureServer(&with_token, "0.0.0.0:0", options, nullptr).ok());
  options.token_file.clear();
  options.client_ca_file = Path("ca.pem");
  grpc::ServerBuilder with_client_certs;
  EXPECT_TRUE(ConfigureServer(&with_client_certs, "0.0.0.0:0", options, nullptr).ok());
}

TEST_F(GrpcSecurityTest, TokenOverInsecureNonLoopbackChannelIsRefused) {
  ClientSecurityOptions client;
  client.token_file = Path("token");
  const auto channel = MakeChannel("10.1.2.3:50051", client);
  EXPECT_EQ(channel.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(channel.status().message().find("in clear"), std::string::npos) << channel.status().message();

  EXPECT_TRUE(MakeChannel("localhost:50051", client).ok());
  if (!openssl_ok_) return;
  client.tls_ca_file = Path("ca.pem");
  EXPECT_TRUE(MakeChannel("10.1.2.3:50051", client).ok());
}

TEST_F(GrpcSecurityTest, EmptyTokenFileIsRefused) {
  WriteFile(Path("empty-token"), " \n");
  ClientSecurityOptions client;
  client.token_file = Path("empty-token");
  const auto channel = MakeChannel("127.0.0.1:1", client);
  EXPECT_EQ(channel.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(channel.status().message().find("is empty"), std::string::npos) << channel.status().message();
}

// ---- Helpers ----

TEST(IsLoopbackAddressTest, TellsLoopbackFromOtherAddresses) {
  for (const char* address :
       {"127.0.0.1:50051", "127.3.4.5:1", "localhost:50051", "LOCALHOST", "[::1]:50051", "::1",
        "ipv4:127.0.0.1:50051", "dns:///localhost:50051", "dns://8.8.8.8/localhost:1", "unix:/tmp/dtm.sock",
        "unix-abstract:dtm", "ipv4:127.0.0.1:1,127.0.0.2:2"}) {
    EXPECT_TRUE(IsLoopbackAddress(address)) << address;
  }
  for (const char* address :
       {"0.0.0.0:50051", "[::]:50051", "10.0.0.1:50051", "coordinator:50051", "dns:///coordinator.svc:50051",
        "128.0.0.1:1", "localhost.example.com:1", "ipv4:127.0.0.1:1,10.0.0.1:2", "[::1", ""}) {
    EXPECT_FALSE(IsLoopbackAddress(address)) << address;
  }
}

TEST(SetDeadlineTest, DeadlineIsTimeoutFromNow) {
  grpc::ClientContext ctx;
  const auto before = std::chrono::system_clock::now();
  SetDeadline(&ctx, milliseconds(1500));
  const auto after = std::chrono::system_clock::now();
  EXPECT_GE(ctx.deadline(), before + milliseconds(1500));
  EXPECT_LE(ctx.deadline(), after + milliseconds(1500));
}

TEST(SecurityFlagsTest, ServerFlagsParseIntoTheOptions) {
  CLI::App app;
  ServerSecurityOptions options;
  AddServerSecurityFlags(&app, &options);
  const char* argv[] = {"dtm-coordinator", "--tls-cert", "s.pem",        "--tls-key", "s.key",
                        "--tls-client-ca", "ca.pem",     "--token-file", "token",     "--allow-insecure"};
  app.parse(static_cast<int>(std::size(argv)), argv);
  EXPECT_EQ(options.tls_cert_file, "s.pem");
  EXPECT_EQ(options.tls_key_file, "s.key");
  EXPECT_EQ(options.client_ca_file, "ca.pem");
  EXPECT_EQ(options.token_file, "token");
  EXPECT_TRUE(options.allow_insecure);
}

TEST(SecurityFlagsTest, ClientFlagsParseIntoTheOptions) {
  CLI::App app;
  ClientSecurityOptions options;
  AddClientSecurityFlags(&app, &options);
  const char* argv[] = {"dtmctl",
                        "--tls-ca",
                        "ca.pem",
                        "--tls-cert",
                        "c.pem",
                        "--tls-key",
                        "c.key",
                        "--token-file",
                        "token",
                        "--tls-server-name",
                        "coordinator.example"};
  app.parse(static_cast<int>(std::size(argv)), argv);
  EXPECT_EQ(options.tls_ca_file, "ca.pem");
  EXPECT_EQ(options.tls_cert_file, "c.pem");
  EXPECT_EQ(options.tls_key_file, "c.key");
  EXPECT_EQ(options.token_file, "token");
  EXPECT_EQ(options.tls_server_name, "coordinator.example");
}

}  // namespace
}  // namespace dtm
