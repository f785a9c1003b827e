# syntax=docker/dockerfile:1
# dtm-worker on CPU with Debian's libtorch (OpenBLAS). Build from the repository root:
#   docker build -f docker/worker-cpu.Dockerfile -t dtm-worker:0.1.0-cpu .
ARG DEBIAN_RELEASE=bookworm

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
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DDTM_WERROR=OFF \
    && cmake --build /build --target dtm-worker -j"$(nproc)" \
    && strip /build/worker/dtm-worker

FROM debian:${DEBIAN_RELEASE}-slim
# libtorch must run on OpenBLAS's threaded BLAS, not the reference BLAS (install_deps.sh: 15x).
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libtorch1.13 libopenblas0-pthread zlib1g \
      libgrpc++1.51 libprotobuf32 libhiredis0.14 libsqlite3-0 libprometheus-cpp-core1.0 libcpp-httplib0.11 \
      libspdlog1.10 libyaml-cpp0.7 python3-minimal python3-grpcio \
    && rm -rf /var/lib/apt/lists/* \
    && lib=$(update-alternatives --list libblas.so.3-x86_64-linux-gnu | grep openblas-pthread) \
    && update-alternatives --set libblas.so.3-x86_64-linux-gnu "$lib" \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin dtm
COPY --from=build /build/worker/dtm-worker /usr/local/bin/dtm-worker
COPY docker/grpc_health_check.py /usr/local/bin/dtm-health-check
USER 10001
EXPOSE 8081 9101
# The worker answers NOT_SERVING until its model is loaded and it is registered, so the start
# period covers a model load.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
  CMD ["dtm-health-check", "--address", "127.0.0.1:8081", "--timeout", "3"]
# dtm-worker drains on SIGTERM (finishes its task, returns unstarted leases); give `docker stop`
# a long --time (-t) for a task to finish.
STOPSIGNAL SIGTERM
# The health and metrics addresses are fixed in ENTRYPOINT (dtm-worker refuses a repeated flag)
# because HEALTHCHECK and EXPOSE rely on them; --entrypoint dtm-worker frees them.
ENTRYPOINT ["dtm-worker", "--health-listen=0.0.0.0:8081", "--metrics-listen=0.0.0.0:9101", "--device=cpu"]
# --coordinator and --model are required and deployment-specific: they are the `docker run` args.
