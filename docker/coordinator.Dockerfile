# syntax=docker/dockerfile:1
# dtm-coordinator (and, with --target dtmctl, a client image). Build from the repository root:
#   docker build -f docker/coordinator.Dockerfile -t dtm-coordinator:0.1.0 .
#   docker build -f docker/coordinator.Dockerfile --target dtmctl -t dtmctl:0.1.0 .
ARG DEBIAN_RELEASE=bookworm

# ---- build: the Debian packages of scripts/install_deps.sh that the build needs (gtest: the
# top-level CMakeLists requires it whenever the daemons are configured, even if no test is built).
FROM debian:${DEBIAN_RELEASE} AS build
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config ca-certificates \
      libtorch-dev libopenblas0-pthread \
      libgrpc++-dev protobuf-compiler-grpc libhiredis-dev libsqlite3-dev libgloo-dev prometheus-cpp-dev libcpp-httplib-dev \
      libspdlog-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev zlib1g-dev \
      libgtest-dev libgmock-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Warnings are policed by CI on the pinned toolchain, not by an image build.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DDTM_WERROR=OFF \
    && cmake --build /build --target dtm-coordinator dtmctl -j"$(nproc)" \
    && strip /build/coordinator/dtm-coordinator /build/cli/dtmctl

# ---- dtmctl: a client image (submit/watch/results from inside the cluster, e.g. a Job). dtmctl
# also carries the engine commands, so it links libtorch: hundreds of MB that the coordinator,
# which is torch-free, does not need. Hence its own stage rather than a copy in the coordinator.
FROM debian:${DEBIAN_RELEASE}-slim AS dtmctl
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libtorch1.13 libopenblas0-pthread zlib1g \
      libgrpc++1.51 libhiredis0.14 libsqlite3-0 libprometheus-cpp-core1.0 libcpp-httplib0.11 libspdlog1.10 libyaml-cpp0.7 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin dtm
COPY --from=build /build/cli/dtmctl /usr/local/bin/dtmctl
USER 10001
# dtmctl reads the coordinator address from $DTM_COORDINATOR when --coordinator is not given.
ENV DTM_COORDINATOR=dtm-coordinator:7070
ENTRYPOINT ["dtmctl"]
CMD ["jobs"]

# ---- coordinator (the default target): runtime libraries only, no compiler, no headers.
# python3-grpcio is there for HEALTHCHECK alone: Debian has no grpc_health_probe and dtmctl has no
# health command; Kubernetes does not use it (the chart uses native `grpc:` probes).
FROM debian:${DEBIAN_RELEASE}-slim AS coordinator
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libgrpc++1.51 libprotobuf32 libhiredis0.14 libsqlite3-0 libprometheus-cpp-core1.0 \
      libcpp-httplib0.11 libspdlog1.10 libyaml-cpp0.7 python3-minimal python3-grpcio \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin dtm
COPY --from=build /build/coordinator/dtm-coordinator /usr/local/bin/dtm-coordinator
COPY docker/grpc_health_check.py /usr/local/bin/dtm-health-check
USER 10001
EXPOSE 7070 9100
# The coordinator serves grpc.health.v1 on its gRPC port; 127.0.0.1 reaches a 0.0.0.0 listener.
# With TLS on, add --tls-ca (and --tls-server-name) through a derived image or the orchestrator.
HEALTHCHECK --interval=15s --timeout=5s --start-period=40s --retries=3 \
  CMD ["dtm-health-check", "--address", "127.0.0.1:7070", "--timeout", "3"]
ENTRYPOINT ["dtm-coordinator"]
# Defaults for `docker run` on a private Docker network: listen on every interface, which a
# plaintext server does only with --allow-insecure. On a shared network pass --tls-cert/--tls-key
# (and --token-file) instead; the Helm chart sets all flags itself.
CMD ["--listen", "0.0.0.0:7070", "--metrics-listen", "0.0.0.0:9100", "--redis", "redis://redis:6379", \
     "--allow-insecure"]
