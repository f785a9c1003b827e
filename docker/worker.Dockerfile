# syntax=docker/dockerfile:1
# dtm-worker on an NVIDIA GPU. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t dtm-worker:0.1.0-cuda .
#
# Why not a pytorch/pytorch or nvidia/cuda (Ubuntu) base: the worker needs gRPC 1.51,
# prometheus-cpp, hiredis and friends (DTM_ENGINE_ONLY leaves the worker out), which the project
# takes from Debian bookworm; Ubuntu 22.04's gRPC is older. So the base stays Debian and the CUDA
# parts come from outside Debian:
#   * libtorch: the official CUDA "cxx11-abi shared-with-deps" zip (LIBTORCH_URL). It bundles the
#     CUDA runtime, cuBLAS and cuDNN libraries it was built with, so the runtime image needs no
#     CUDA toolkit; the driver (libcuda.so) comes from the host through the NVIDIA container
#     toolkit. The cxx11 ABI is the one Debian's g++ uses.
#   * the CUDA toolkit, in the build stage only: libtorch's CMake config looks for nvcc and the
#     CUDA libraries at configure time. It comes from NVIDIA's debian12 apt repository.
# Not built or run here (no Docker daemon where this was written): CUDA_APT (the toolkit version)
# must match the CUDA version of LIBTORCH_URL.
ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE} AS build
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu121/libtorch-cxx11-abi-shared-with-deps-2.3.1%2Bcu121.zip
ARG CUDA_APT=12-1
ARG CUDA_KEYRING_URL=https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config ca-certificates curl unzip \
      libgrpc++-dev protobuf-compiler-grpc libhiredis-dev libsqlite3-dev libgloo-dev prometheus-cpp-dev libcpp-httplib-dev \
      libspdlog-dev libyaml-cpp-dev nlohmann-json3-dev libcli11-dev zlib1g-dev \
      libgtest-dev libgmock-dev \
    && curl -fsSL -o /tmp/cuda-keyring.deb "$CUDA_KEYRING_URL" && dpkg -i /tmp/cuda-keyring.deb \
    && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      cuda-toolkit-${CUDA_APT} \
    && rm -rf /var/lib/apt/lists/* /tmp/cuda-keyring.deb \
    && curl -fsSL -o /tmp/libtorch.zip "$LIBTORCH_URL" && unzip -q /tmp/libtorch.zip -d /opt && rm /tmp/libtorch.zip
# NCCL, for GPU training gangs (c10d's ProcessGroupNCCL): PyTorch's CUDA libtorch zips link it
# statically into libtorch_cuda.so (their builds set USE_STATIC_NCCL); a zip that ships libnccl.so.2
# in lib/ instead does as well, since the runtime stage copies lib/ whole. Fail here rather than at a
# gang's first all-reduce if a LIBTORCH_URL brings neither. NCCL_IB_HCA is a string of NCCL's own
# InfiniBand transport code (the variable it reads), not of c10d's.
RUN ls /opt/libtorch/lib/libnccl.so* >/dev/null 2>&1 \
    || grep -qa NCCL_IB_HCA /opt/libtorch/lib/libtorch_cuda.so \
    || { echo "no NCCL in the libtorch of LIBTORCH_URL: GPU gangs need it" >&2; exit 1; }
ENV PATH=/usr/local/cuda/bin:${PATH}
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DDTM_WERROR=OFF \
      -DCMAKE_PREFIX_PATH=/opt/libtorch -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
    && cmake --build /build --target dtm-worker -j"$(nproc)" \
    && strip /build/worker/dtm-worker

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates zlib1g libgomp1 \
      libgrpc++1.51 libprotobuf32 libhiredis0.14 libsqlite3-0 libprometheus-cpp-core1.0 libcpp-httplib0.11 \
      libspdlog1.10 libyaml-cpp0.7 python3-minimal python3-grpcio \
      libibverbs1 ibverbs-providers \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin dtm
# libibverbs1 and its providers (above): NCCL dlopens them for InfiniBand/RoCE and falls back to TCP
# sockets without them, so they cost a few MB and decide whether IB can be used at all.
# Only libtorch's shared libraries (with their bundled CUDA libraries and NCCL): no headers, no CMake
# files.
COPY --from=build /opt/libtorch/lib/ /opt/libtorch/lib/
COPY --from=build /build/worker/dtm-worker /usr/local/bin/dtm-worker
COPY docker/grpc_health_check.py /usr/local/bin/dtm-health-check
ENV LD_LIBRARY_PATH=/opt/libtorch/lib
# Read by the NVIDIA container toolkit: expose the GPU the runtime assigns, with compute only.
ENV NVIDIA_VISIBLE_DEVICES=all NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER 10001
EXPOSE 8081 9101
# NOT_SERVING until the model is loaded and the worker registered: the start period covers a 7B load.
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
  CMD ["dtm-health-check", "--address", "127.0.0.1:8081", "--timeout", "3"]
# dtm-worker drains on SIGTERM; give `docker stop` a long -t so a task can finish.
STOPSIGNAL SIGTERM
# Fixed here (dtm-worker refuses a repeated flag) because HEALTHCHECK and EXPOSE rely on them; one
# container sees one GPU, so "cuda" is the device. --entrypoint dtm-worker frees them.
ENTRYPOINT ["dtm-worker", "--health-listen=0.0.0.0:8081", "--metrics-listen=0.0.0.0:9101", "--device=cuda"]
# --coordinator and --model are required and deployment-specific: they are the `docker run` args.
