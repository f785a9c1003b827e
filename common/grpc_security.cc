#include "common/grpc_security.h"

#include <arpa/inet.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/support/client_interceptor.h>
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

namespace dtm {
namespace {

constexpr std::string_view kDtmServicePrefix = "/dtm.v1.DtmService/";
constexpr std::string_view kWorkerServicePrefix = "/dtm.v1.WorkerService/";
constexpr std::string_view kPathKey = ":path";
constexpr char kAuthorizationKey[] = "authorization";
constexpr std::string_view kBearerScheme = "Bearer ";

// Keepalive. Clients ping an idle connection every 30 s so that a coordinator restart or a dropped
// NAT entry shows within seconds rather than at the next call's deadline; the server pings every
// 60 s so that a vanished worker's or watcher's connection is closed. The server accepts client
// pings up to every 10 s, well above the clients' rate, so that it never answers them with GOAWAY
// ("too_many_pings").
constexpr int kClientKeepaliveTimeMs = 30'000;
constexpr int kServerKeepaliveTimeMs = 60'000;
constexpr int kKeepaliveTimeoutMs = 20'000;
constexpr int kServerMinClientPingIntervalMs = 10'000;

bool StartsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  if (s.size() < prefix.size()) return false;
  for (size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) !=
        std::tolower(static_cast<unsigned char>(prefix[i]))) {
      return false;
    }
  }
  return true;
}

std::string Trim(const std::string& s) {
  const auto not_space = [](unsigned char c) { return !std::isspace(c); };
  const auto begin = std::find_if(s.begin(), s.end(), not_space);
  const auto end = std::find_if(s.rbegin(), s.rend(), not_space).base();
  return begin < end ? std::string(begin, end) : std::string();
}

}  // namespace

bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

namespace {

StatusOr<std::string> ReadFlagFile(std::string_view flag, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return NotFoundError("cannot read " + std::string(flag) + " file '" + path +
                         "': " + std::strerror(errno));
  }
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) return NotFoundError("cannot read " + std::string(flag) + " file '" + path + "': read error");
  return content.str();
}

enum class PemKind { kCertificate, kPrivateKey };

// Reads a PEM file and checks that it holds what the flag expects, so that a swapped or empty file
// is an error naming it at start-up rather than a server that fails to bind or a failed handshake.
StatusOr<std::string> ReadPemFile(std::string_view flag, const std::string& path, PemKind kind) {
  ASSIGN_OR_RETURN(std::string pem, ReadFlagFile(flag, path));
  const bool ok = kind == PemKind::kCertificate ? pem.find("-----BEGIN CERTIFICATE-----") != std::string::npos
                                                : pem.find("-----BEGIN ") != std::string::npos &&
                                                      pem.find("PRIVATE KEY-----") != std::string::npos;
  if (!ok) {
    return InvalidArgumentError(std::string(flag) + " file '" + path + "' holds no PEM " +
                                (kind == PemKind::kCertificate ? "certificate" : "private key"));
  }
  return pem;
}

}  // namespace

StatusOr<std::string> ReadTokenFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::string raw, ReadFlagFile("--token-file", path));
  std::string token = Trim(raw);
  if (token.empty()) return InvalidArgumentError("--token-file file '" + path + "' is empty");
  for (const char c : token) {
    if (c < 0x21 || c > 0x7e) {
      return InvalidArgumentError("--token-file file '" + path +
                                  "' holds a character that is not visible ASCII; a token must be one word");
    }
  }
  return token;
}

namespace {

Status CheckBothOrNeither(const std::string& cert, const std::string& key) {
  if (!cert.empty() && key.empty())
    return InvalidArgumentError("--tls-cert '" + cert + "' given without --tls-key");
  if (cert.empty() && !key.empty())
    return InvalidArgumentError("--tls-key '" + key + "' given without --tls-cert");
  return OkStatus();
}

// ---- Server side: the auth-metadata processor ----

// What the processor enforces on one listening port.
struct AuthPolicy {
  std::string token;                 // empty: DtmService is open
  std::string worker_token;          // non-empty: WorkerService callers need this bearer token
  bool require_client_cert = false;  // WorkerService callers need a verified client certificate
};

// Whether `authorization` is "Bearer <token>"; compared in constant time.
Status CheckBearer(std::string_view path, const std::string_view* authorization, const std::string& token,
                   const char* flag) {
  if (authorization == nullptr) {
    return Status(StatusCode::kUnauthenticated,
                  std::string(path) + " needs \"authorization: Bearer <token>\" metadata (" + flag + ")");
  }
  if (!StartsWithIgnoreCase(*authorization, kBearerScheme) ||
      !ConstantTimeEquals(authorization->substr(kBearerScheme.size()), token)) {
    return Status(StatusCode::kUnauthenticated, "invalid bearer token for " + std::string(path));
  }
  return OkStatus();
}

// The decision for one call. `authorization` is null when the call carries no such metadata.
Status Authorize(const AuthPolicy& policy, std::string_view path, const std::string_view* authorization,
                 bool peer_authenticated) {
  if (path.empty() && (!policy.token.empty() || !policy.worker_token.empty() || policy.require_client_cert)) {
    // Fail closed: without the method, the call cannot be told apart from a protected one.
    return Status(StatusCode::kUnauthenticated, "call without a :path");
  }
  if (!policy.token.empty() && StartsWith(path, kDtmServicePrefix)) {
    RETURN_IF_ERROR(CheckBearer(path, authorization, policy.token, "dtmctl: --token-file"));
  }
  if (StartsWith(path, kWorkerServicePrefix)) {
    if (policy.require_client_cert && !peer_authenticated) {
      return Status(StatusCode::kUnauthenticated,
                    std::string(path) + " needs a client certificate signed by the server's --tls-client-ca");
    }
    if (!policy.worker_token.empty()) {
      RETURN_IF_ERROR(CheckBearer(path, authorization, policy.worker_token, "dtm-worker: --token-file"));
    }
  }
  return OkStatus();
}

std::string_view SliceView(const grpc_slice& slice) {
  return {reinterpret_cast<const char*>(GRPC_SLICE_START_PTR(slice)), GRPC_SLICE_LENGTH(slice)};
}

// gRPC core calls this for every call on the port, before any handler, with the call's metadata
// (":path" included) and the connection's auth context. It decides at once, so it answers inline,
// which the C API allows.
void ProcessAuthMetadata(void* state, grpc_auth_context* context, const grpc_metadata* md, size_t num_md,
                         grpc_process_auth_metadata_done_cb done, void* user_data) {
  const auto* policy = static_cast<const AuthPolicy*>(state);
  std::string_view path;
  const grpc_metadata* authorization_md = nullptr;
  for (size_t i = 0; i < num_md; ++i) {
    const std::string_view key = SliceView(md[i].key);
    if (key == kPathKey) path = SliceView(md[i].value);
    if (key == kAuthorizationKey) authorization_md = &md[i];
  }
  std::string_view authorization;
  if (authorization_md != nullptr) authorization = SliceView(authorization_md->value);
  const bool peer_authenticated = context != nullptr && grpc_auth_context_peer_is_authenticated(context) != 0;
  const Status status =
      Authorize(*policy, path, authorization_md != nullptr ? &authorization : nullptr, peer_authenticated);
  if (status.ok()) {
    // Consumed: the token goes no further than this check, so a handler cannot log it by mistake.
    done(user_data, authorization_md, authorization_md != nullptr ? 1 : 0, nullptr, 0, GRPC_STATUS_OK,
         nullptr);
  } else {
    done(user_data, nullptr, 0, nullptr, 0, static_cast<grpc_status_code>(status.code()),
         status.message().c_str());
  }
}

void DestroyAuthPolicy(void* state) { delete static_cast<AuthPolicy*>(state); }

// Server credentials around gRPC core credentials (TLS or insecure) carrying dtm's processor. gRPC
// 1.51's C++ InsecureServerCredentials refuses an auth-metadata processor, although core runs one
// on insecure ports too, so the port is added through the C API, as SecureServerCredentials does.
class AuthorizingServerCredentials final : public grpc::ServerCredentials {
 public:
  // Takes ownership of `core`.
  AuthorizingServerCredentials(grpc_server_credentials* core, AuthPolicy policy) : core_(core) {
    grpc_server_credentials_set_auth_metadata_processor(
        core_, grpc_auth_metadata_processor{&ProcessAuthMetadata, &DestroyAuthPolicy,
                                            new AuthPolicy(std::move(policy))});
  }
  ~AuthorizingServerCredentials() override { grpc_server_credentials_release(core_); }
  AuthorizingServerCredentials(const AuthorizingServerCredentials&) = delete;
  AuthorizingServerCredentials& operator=(const AuthorizingServerCredentials&) = delete;

  // dtm's processor is the only one; replacing it would drop the checks this file promises.
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    spdlog::error(
        "AuthorizingServerCredentials: SetAuthMetadataProcessor ignored; dtm's checks stay in place");
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), core_);
  }

  grpc_server_credentials* core_;
};

StatusOr<grpc_server_credentials*> MakeCoreServerCredentials(const ServerSecurityOptions& options) {
  if (options.tls_cert_file.empty()) return grpc_insecure_server_credentials_create();
  ASSIGN_OR_RETURN(const std::string cert,
                   ReadPemFile("--tls-cert", options.tls_cert_file, PemKind::kCertificate));
  ASSIGN_OR_RETURN(const std::string key,
                   ReadPemFile("--tls-key", options.tls_key_file, PemKind::kPrivateKey));
  std::string client_ca;
  if (!options.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(client_ca,
                     ReadPemFile("--tls-client-ca", options.client_ca_file, PemKind::kCertificate));
  }
  grpc_ssl_pem_key_cert_pair pair{key.c_str(), cert.c_str()};
  // REQUEST_..._AND_VERIFY rather than REQUIRE: dtmctl connects to the same port without a client
  // certificate; a certificate that is presented must verify, and the processor then requires one
  // for WorkerService. Core copies the PEM strings.
  grpc_server_credentials* core = grpc_ssl_server_credentials_create_ex(
      client_ca.empty() ? nullptr : client_ca.c_str(), &pair, 1,
      client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                        : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY,
      nullptr);
  if (core == nullptr) {
    return InvalidArgumentError("gRPC refused the TLS server credentials from --tls-cert '" +
                                options.tls_cert_file + "' and --tls-key '" + options.tls_key_file + "'");
  }
  return core;
}

// ---- Client side ----

// Adds the bearer token to every call's initial metadata. Call credentials would do the same, but
// gRPC sends them only over TLS, and dtmctl talks to a coordinator on loopback without TLS.
class BearerTokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerTokenInterceptor(std::shared_ptr<const std::string> header) : header_(std::move(header)) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kAuthorizationKey, *header_);
    }
    methods->Proceed();
  }

 private:
  std::shared_ptr<const std::string> header_;
};

class BearerTokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerTokenInterceptorFactory(const std::string& token)
      : header_(std::make_shared<const std::string>(std::string(kBearerScheme) + token)) {}

  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo*) override {
    return new BearerTokenInterceptor(header_);
  }

 private:
  std::shared_ptr<const std::string> header_;
};

StatusOr<std::shared_ptr<grpc::ChannelCredentials>> MakeChannelCredentials(
    const ClientSecurityOptions& options) {
  if (options.tls_ca_file.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ASSIGN_OR_RETURN(ssl.pem_root_certs, ReadPemFile("--tls-ca", options.tls_ca_file, PemKind::kCertificate));
  if (!options.tls_cert_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_cert_chain,
                     ReadPemFile("--tls-cert", options.tls_cert_file, PemKind::kCertificate));
    ASSIGN_OR_RETURN(ssl.pem_private_key,
                     ReadPemFile("--tls-key", options.tls_key_file, PemKind::kPrivateKey));
  }
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::SslCredentials(ssl);
  if (creds == nullptr) {
    return InvalidArgumentError("gRPC refused the TLS channel credentials from --tls-ca '" +
                                options.tls_ca_file + "'");
  }
  return creds;
}

// True for a plain (scheme-less) host, "[v6]" or "host:port" naming this machine only.
bool IsLoopbackHostPort(std::string_view host_port) {
  std::string_view host;
  if (StartsWith(host_port, "[")) {
    const size_t close = host_port.find(']');
    if (close == std::string_view::npos) return false;
    host = host_port.substr(1, close - 1);
  } else if (std::count(host_port.begin(), host_port.end(), ':') > 1) {
    host = host_port;  // a bare IPv6 address, no port
  } else {
    host = host_port.substr(0, host_port.find(':'));
  }
  std::string lower(host);
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "localhost") return true;
  in_addr v4{};
  if (inet_pton(AF_INET, lower.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
  in6_addr v6{};
  if (inet_pton(AF_INET6, lower.c_str(), &v6) == 1)
    return std::memcmp(&v6, &in6addr_loopback, sizeof(v6)) == 0;
  return false;
}

}  // namespace

void AddServerSecurityFlags(CLI::App* app, ServerSecurityOptions* options) {
  app->add_option("--tls-cert", options->tls_cert_file,
                  "Server certificate chain (PEM); enables TLS, needs --tls-key");
  app->add_option("--tls-key", options->tls_key_file, "Private key (PEM) of --tls-cert");
  app->add_option(
      "--tls-client-ca", options->client_ca_file,
      "CA (PEM) that signs worker certificates: WorkerService calls need a client certificate it signed");
  app->add_option("--token-file", options->token_file,
                  "File holding the bearer token DtmService calls must carry (surrounding whitespace ignored); "
                  "WorkerService calls must carry it too unless --worker-token-file or --tls-client-ca says otherwise");
  app->add_option("--worker-token-file", options->worker_token_file,
                  "File holding the bearer token WorkerService calls must carry (instead of --token-file's)");
  app->add_flag("--allow-insecure", options->allow_insecure,
                "Allow listening on a non-loopback address without TLS, or without any authentication "
                "(traffic and tokens travel in clear; anyone who reaches the port may submit jobs or act as a worker)");
}

Status ConfigureServer(grpc::ServerBuilder* builder, const std::string& listen_address,
                       const ServerSecurityOptions& options, int* selected_port) {
  RETURN_IF_ERROR(CheckBothOrNeither(options.tls_cert_file, options.tls_key_file));
  const bool tls = !options.tls_cert_file.empty();
  if (!options.client_ca_file.empty() && !tls) {
    return InvalidArgumentError(
        "--tls-client-ca '" + options.client_ca_file +
        "' needs --tls-cert and --tls-key: client certificates are only checked over TLS");
  }
  if (!tls && !IsLoopbackAddress(listen_address)) {
    if (!options.allow_insecure) {
      return InvalidArgumentError("refusing to listen on non-loopback address '" + listen_address +
                                  "' without TLS: pass --tls-cert and --tls-key, or --allow-insecure");
    }
    spdlog::warn("gRPC on {} without TLS (--allow-insecure): calls{} travel in clear", listen_address,
                 options.token_file.empty() ? "" : " and the bearer token");
  }

  AuthPolicy policy;
  if (!options.token_file.empty()) {
    ASSIGN_OR_RETURN(policy.token, ReadTokenFile(options.token_file));
  }
  policy.require_client_cert = !options.client_ca_file.empty();
  if (!options.worker_token_file.empty()) {
    ASSIGN_OR_RETURN(policy.worker_token, ReadTokenFile(options.worker_token_file));
  } else if (!policy.require_client_cert) {
    // Whenever the client API needs credentials, so does the worker API: an unauthenticated caller
    // that could register as a worker could report made-up results into the cache.
    policy.worker_token = policy.token;
  }
  const bool authenticated = !policy.token.empty() || !policy.worker_token.empty() || policy.require_client_cert;
  if (!authenticated && !IsLoopbackAddress(listen_address)) {
    if (!options.allow_insecure) {
      return InvalidArgumentError("refusing to listen on non-loopback address '" + listen_address +
                                  "' without authentication: pass --token-file (and/or --tls-client-ca), or "
                                  "--allow-insecure");
    }
    spdlog::warn("gRPC on {} without authentication (--allow-insecure): anyone who reaches it may submit jobs or "
                 "register as a worker",
                 listen_address);
  }
  ASSIGN_OR_RETURN(grpc_server_credentials * core, MakeCoreServerCredentials(options));

  builder->AddListeningPort(
      listen_address, std::make_shared<AuthorizingServerCredentials>(core, std::move(policy)), selected_port);
  // gRPC sets SO_REUSEPORT by default: a second daemon on a taken port would start without an
  // error and share (steal) the first one's connections.
  builder->AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder->SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder->SetMaxSendMessageSize(kMaxMessageBytes);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, kServerKeepaliveTimeMs);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  // Workers and watchers keep connections open between calls; their keepalive pings are welcome.
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                              kServerMinClientPingIntervalMs);
  spdlog::info("gRPC on {}: {}{}{}{}", listen_address, tls ? "TLS" : "no TLS",
               options.client_ca_file.empty() ? "" : ", client certificates required for WorkerService",
               options.token_file.empty() ? "" : ", bearer token required for DtmService",
               policy.worker_token.empty() ? ""
               : options.worker_token_file.empty() ? ", the same token required for WorkerService"
                                                   : ", the worker token required for WorkerService");
  return OkStatus();
}

void AddClientSecurityFlags(CLI::App* app, ClientSecurityOptions* options) {
  app->add_option("--tls-ca", options->tls_ca_file, "CA (PEM) to verify the server against; enables TLS");
  app->add_option("--tls-cert", options->tls_cert_file,
                  "Client certificate chain (PEM) for mutual TLS; needs --tls-ca");
  app->add_option("--tls-key", options->tls_key_file, "Private key (PEM) of --tls-cert");
  app->add_option("--token-file", options->token_file, "File holding the bearer token sent on every call");
  app->add_option("--tls-server-name", options->tls_server_name,
                  "Name to expect in the server certificate instead of the address's host");
}

StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                     const ClientSecurityOptions& options) {
  RETURN_IF_ERROR(CheckBothOrNeither(options.tls_cert_file, options.tls_key_file));
  const bool tls = !options.tls_ca_file.empty();
  if (!tls && !options.tls_cert_file.empty()) {
    return InvalidArgumentError("--tls-cert '" + options.tls_cert_file +
                                "' needs --tls-ca: a client certificate is only sent over TLS");
  }
  if (!tls && !options.tls_server_name.empty()) {
    return InvalidArgumentError("--tls-server-name '" + options.tls_server_name + "' needs --tls-ca");
  }
  if (!tls && !options.token_file.empty() && !IsLoopbackAddress(address)) {
    return InvalidArgumentError("refusing to send the bearer token from --token-file '" + options.token_file +
                                "' in clear to non-loopback address '" + address + "': pass --tls-ca");
  }

  std::string token;
  if (!options.token_file.empty()) {
    ASSIGN_OR_RETURN(token, ReadTokenFile(options.token_file));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> creds, MakeChannelCredentials(options));

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kClientKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // By default a client stops pinging after two pings without data; an idle worker must keep going.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);

  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!token.empty()) interceptors.push_back(std::make_unique<BearerTokenInterceptorFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, creds, args,
                                                                 std::move(interceptors));
}

void SetDeadline(grpc::ClientContext* context, std::chrono::milliseconds timeout) {
  context->set_deadline(std::chrono::system_clock::now() + timeout);
}

bool IsLoopbackAddress(const std::string& address) {
  std::string_view rest = address;
  if (StartsWith(rest, "unix:") || StartsWith(rest, "unix-abstract:")) return true;
  for (const std::string_view scheme : {"ipv4:", "ipv6:", "dns:"}) {
    if (StartsWith(rest, scheme)) {
      rest.remove_prefix(scheme.size());
      break;
    }
  }
  // dns:///host:port and dns://authority/host:port
  if (StartsWith(rest, "//")) {
    const size_t slash = rest.find('/', 2);
    if (slash == std::string_view::npos) return false;
    rest.remove_prefix(slash + 1);
  }
  if (rest.empty()) return false;
  // ipv4:/ipv6: targets may list several addresses; all must be loopback.
  while (true) {
    const size_t comma = rest.find(',');
    if (!IsLoopbackHostPort(rest.substr(0, comma))) return false;
    if (comma == std::string_view::npos) return true;
    rest.remove_prefix(comma + 1);
  }
}

}  // namespace dtm
