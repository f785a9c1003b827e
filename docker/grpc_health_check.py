#!/usr/bin/env python3
"""grpc.health.v1.Health/Check against a dtm daemon, for Docker's HEALTHCHECK.

Debian ships no grpc_health_probe and python3-grpcio has no health stubs, so the call is made with
raw bytes: an empty HealthCheckRequest (service "" = the whole server) encodes as b"", and a
HealthCheckResponse with status SERVING (1) as b"\\x08\\x01". Exit 0 when SERVING, 1 otherwise,
which is what HEALTHCHECK wants. Kubernetes does not use this: the chart uses native grpc probes.
"""
import argparse
import sys

SERVING = b"\x08\x01"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", default="127.0.0.1:7070", help="HOST:PORT of the gRPC server")
    parser.add_argument("--tls-ca", default="", help="CA (PEM) to verify a TLS server against")
    parser.add_argument("--tls-server-name", default="", help="name expected in the server certificate")
    parser.add_argument("--timeout", type=float, default=3.0, help="deadline in seconds")
    args = parser.parse_args()
    import grpc  # after parsing, so that --help works without python3-grpcio

    if args.tls_ca:
        with open(args.tls_ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
        channel = grpc.secure_channel(args.address, creds, options=options)
    else:
        channel = grpc.insecure_channel(args.address)
    check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                request_serializer=lambda b: b, response_deserializer=lambda b: b)
    try:
        reply = check(b"", timeout=args.timeout)
    except grpc.RpcError as e:
        print(f"health check of {args.address}: {e.code().name}: {e.details()}", file=sys.stderr)
        return 1
    if reply != SERVING:
        print(f"health check of {args.address}: not SERVING (response {reply!r})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
