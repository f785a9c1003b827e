// Transport security and channel/server set-up shared by dtm-coordinator, dtm-worker and dtmctl:
// TLS, mutual TLS for workers, a bearer token for the client API, message-size limits, keepalive.
//
// What is protected, on a coordinator port:
//   /dtm.v1.DtmService/*     needs "authorization: Bearer <token>" when a token file is set;
//   /dtm.v1.WorkerService/*  needs a client certificate signed by --tls-client-ca when one is set, and
//                            "authorization: Bearer <worker token>" when --worker-token-file is set;
//                            without either, the --token-file token when one is set: whenever the
//                            client API requires authentication, so does the worker API;
//   anything else (the standard health service) is open, so that probes need no secrets.
// Off loopback, a port without TLS or without any authentication is refused unless --allow-insecure.
//
// The checks run in gRPC core's auth-metadata step, before the call reaches any handler, so a
// rejected call never runs application code and the client sees UNAUTHENTICATED. (A server
// interceptor cannot do this in gRPC 1.51: it cannot stop a synchronous handler from running, and
// can only cancel the call, which the client sees as CANCELLED.)
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace CLI {
class App;
}
namespace grpc {
class Channel;
class ClientContext;
class ServerBuilder;
}  // namespace grpc

namespace dtm {

// Bounds for every message either way (tasks carry a shard's token rows: tens of KB; 16 MiB is ample).
inline constexpr int kMaxMessageBytes = 16 << 20;

struct ServerSecurityOptions {
  std::string tls_cert_file, tls_key_file;  // PEM; both or neither
  std::string client_ca_file;  // when set: mTLS, WorkerService callers must present a cert signed by it
  std::string
      token_file;  // when set: DtmService calls need "authorization: Bearer <token>" (file content, trimmed)
  std::string worker_token_file;  // when set: WorkerService calls need this bearer token (see the top)
  bool allow_insecure =
      false;  // without TLS or authentication, listening on a non-loopback address is refused unless this is set
};

// Adds --tls-cert, --tls-key, --tls-client-ca, --token-file, --worker-token-file and --allow-insecure to `app`, writing
// into `options` (which must outlive the parse).
void AddServerSecurityFlags(CLI::App* app, ServerSecurityOptions* options);

// Adds the listening port `listen_address` to `builder` with the credentials `options` ask for,
// the message-size limits, the keepalive settings and the checks described at the top of this file.
// Files are read here, so that a bad one is an error at start-up: NOT_FOUND naming the flag and the
// file for one that cannot be read, INVALID_ARGUMENT for a file that holds no PEM of the right kind,
// a cert without a key (or the reverse), a client CA without TLS, or a non-loopback address without
// TLS (or without any authentication) and without allow_insecure. `selected_port` (may be null) receives the bound port, e.g. for
// "127.0.0.1:0", once builder->BuildAndStart() has run; a bind failure shows there as a null server.
Status ConfigureServer(grpc::ServerBuilder* builder, const std::string& listen_address,
                       const ServerSecurityOptions& options, int* selected_port);

struct ClientSecurityOptions {
  std::string tls_ca_file;                  // when set, TLS verifying the server against this CA
  std::string tls_cert_file, tls_key_file;  // client cert for mTLS (workers); needs tls_ca_file
  std::string token_file;                   // bearer token sent on every call (dtmctl; dtm-worker: the worker token)
  std::string tls_server_name;              // override the name checked in the server cert (optional)
};

// Adds --tls-ca, --tls-cert, --tls-key, --token-file and --tls-server-name to `app`.
void AddClientSecurityFlags(CLI::App* app, ClientSecurityOptions* options);

// A channel to `address` with the message-size limits, keepalive, the credentials and (when a token
// is set) a client interceptor that adds the authorization metadata to every call. Errors as for
// ConfigureServer, and INVALID_ARGUMENT for a token over an insecure channel to a non-loopback
// address (the token would travel in clear). The channel connects lazily: an unreachable server
// shows as UNAVAILABLE on the first call.
StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& address,
                                                     const ClientSecurityOptions& options);

// Sets a deadline of `timeout` from now on `context` (every dtm RPC has one).
void SetDeadline(grpc::ClientContext* context, std::chrono::milliseconds timeout);

// True for addresses only this machine can reach: 127.x.y.z, [::1], localhost (each with or without a
// port and an ipv4:/ipv6:/dns: scheme) and unix: sockets. False for wildcard ones (0.0.0.0, [::]).
bool IsLoopbackAddress(const std::string& address);

// A --token-file's token: the file's content without surrounding whitespace (editors add a final
// newline); it travels as an HTTP header value, so it must be visible ASCII. NOT_FOUND for a file
// that cannot be read, INVALID_ARGUMENT for an empty token or one with other characters.
StatusOr<std::string> ReadTokenFile(const std::string& path);

// Compares in time independent of where the strings differ, so that response times do not reveal
// how much of a guessed token was right.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace dtm
