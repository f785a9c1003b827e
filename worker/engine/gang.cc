#include "worker/engine/gang.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <exception>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DTM_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

namespace dtm {

// One of the two process groups is set. Both have the same collective calls (ProcessGroup's in
// libtorch 1.13, Backend's in 2.x), so Call runs a call on whichever it is.
struct Gang::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#ifdef DTM_WITH_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  template <typename Function>
  auto Call(Function&& function) {
#ifdef DTM_WITH_NCCL
    if (nccl) return function(*nccl);
#endif
    return function(*gloo);
  }
};

namespace {

// c10d reports failures (a peer gone, a timeout) as exceptions; the first line says what.
std::string FirstLine(const std::exception& e) {
  std::string what = e.what();
  const size_t newline = what.find('\n');
  return newline == std::string::npos ? what : what.substr(0, newline);
}

}  // namespace

int FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  const bool ok = bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
                  getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0;
  close(fd);
  return ok ? ntohs(address.sin_port) : 0;
}

bool NcclBuiltIn() {
#ifdef DTM_WITH_NCCL
  return true;
#else
  return false;
#endif
}

Gang::Gang(GangOptions options, int port, std::string backend, std::unique_ptr<Group> group)
    : options_(std::move(options)), port_(port), backend_(std::move(backend)), group_(std::move(group)) {}

Gang::~Gang() = default;

StatusOr<std::unique_ptr<Gang>> Gang::Join(const GangOptions& options) {
  if (options.world_size < 1 || options.rank < 0 || options.rank >= options.world_size) {
    return InvalidArgumentError("gang: rank " + std::to_string(options.rank) + " is not in [0, " +
                                std::to_string(options.world_size) + ")");
  }
  if (options.master_port < 0 || options.master_port > 65535 || (options.rank > 0 && options.master_port == 0)) {
    return InvalidArgumentError("gang: master port " + std::to_string(options.master_port) +
                                " (every rank but 0 needs rank 0's port)");
  }
  std::string backend = options.backend;
  if (backend.empty()) backend = options.device.is_cuda() && NcclBuiltIn() ? "nccl" : "gloo";
  if (backend != "gloo" && backend != "nccl") {
    return InvalidArgumentError("gang: unknown backend '" + backend + "' (gloo or nccl)");
  }
  if (backend == "nccl" && !NcclBuiltIn()) {
    return InvalidArgumentError("gang: this build has no NCCL (its libtorch is not a CUDA one); use gloo");
  }
  if (backend == "nccl" && !options.device.is_cuda()) {
    return InvalidArgumentError("gang: NCCL needs a CUDA device, not " + options.device.str());
  }
  const std::string where = "gang rank " + std::to_string(options.rank) + " of " +
                            std::to_string(options.world_size) + " at " + options.master_host + ":" +
                            std::to_string(options.master_port);
  auto group = std::make_unique<Group>();
  int port = options.master_port;
  try {
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(options.master_port);
    store_options.isServer = options.rank == 0;
    store_options.waitWorkers = false;  // the process group's rendezvous waits for them, with its timeout
    store_options.timeout = options.timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(options.master_host, store_options);
    port = store->getPort();
    if (options.rank == 0 && options.on_listening) options.on_listening(port);
    group->store = store;
    if (backend == "gloo") {
      auto gloo_options = c10d::ProcessGroupGloo::Options::create(options.timeout);
      gloo_options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(options.bind_host));
      group->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(group->store, options.rank, options.world_size,
                                                                gloo_options);
    } else {
#ifdef DTM_WITH_NCCL
      // A worker is a daemon: a member gone must end this member's wait with an error after the
      // timeout (blocking wait), and NCCL's watchdog must abort the communicator without killing
      // the process (2 = clean-up only; libtorch 2.x defaults to 3, tear the process down). An
      // operator's own settings win.
      setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
      setenv("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2", /*overwrite=*/0);
      auto nccl_options = c10d::ProcessGroupNCCL::Options::create();
      nccl_options->timeout = options.timeout;
      group->nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(group->store, options.rank, options.world_size,
                                                                nccl_options);
#endif
    }
  } catch (const std::exception& e) {
    return UnavailableError(where + ": cannot join: " + FirstLine(e));
  }
  auto gang = std::unique_ptr<Gang>(new Gang(options, port, backend, std::move(group)));
  // NCCL makes its communicator lazily, at the first collective: joining means one has run.
  if (backend == "nccl") RETURN_IF_ERROR(gang->Barrier());
  return gang;
}

Status Gang::AllReduceFlat(torch::Tensor& flat, bool max) {
  std::vector<at::Tensor> tensors = {flat};
  c10d::AllreduceOptions op;
  op.reduceOp = max ? c10d::ReduceOp::MAX : c10d::ReduceOp::SUM;
  op.timeout = options_.timeout;
  try {
    group_->Call([&](auto& group) { return group.allreduce(tensors, op)->wait(options_.timeout); });
  } catch (const std::exception& e) {
    return UnavailableError("gang rank " + std::to_string(options_.rank) + ": all-reduce failed (a member gone?): " +
                            FirstLine(e));
  }
  return OkStatus();
}

Status Gang::AllReduceSum(std::vector<torch::Tensor>& tensors) {
  if (options_.world_size == 1) return OkStatus();
  torch::NoGradGuard no_grad;
  // Buckets of whole tensors in order, each flattened into one buffer, all-reduced, copied back.
  size_t begin = 0;
  while (begin < tensors.size()) {
    size_t end = begin;
    int64_t elements = 0;
    while (end < tensors.size() && (end == begin || elements + tensors[end].numel() <= options_.bucket_elements)) {
      elements += tensors[end].numel();
      ++end;
    }
    std::vector<torch::Tensor> flat_parts;
    for (size_t i = begin; i < end; ++i) flat_parts.push_back(tensors[i].reshape({-1}));
    torch::Tensor flat = torch::cat(flat_parts);
    RETURN_IF_ERROR(AllReduceFlat(flat, /*max=*/false));
    int64_t offset = 0;
    for (size_t i = begin; i < end; ++i) {
      const int64_t n = tensors[i].numel();
      tensors[i].copy_(flat.slice(0, offset, offset + n).view_as(tensors[i]));
      offset += n;
    }
    begin = end;
  }
  return OkStatus();
}

Status Gang::AllGather(const torch::Tensor& mine, torch::Tensor* all) {
  if (options_.world_size == 1) {
    *all = mine.clone();
    return OkStatus();
  }
  std::vector<at::Tensor> input = {mine.contiguous()};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < options_.world_size; ++r) output[0].push_back(torch::empty_like(input[0]));
  try {
    group_->Call([&](auto& group) { return group.allgather(output, input)->wait(options_.timeout); });
  } catch (const std::exception& e) {
    return UnavailableError("gang rank " + std::to_string(options_.rank) + ": all-gather failed (a member gone?): " +
                            FirstLine(e));
  }
  *all = torch::cat(output[0]);
  return OkStatus();
}

Status Gang::Barrier() {
  torch::Tensor token = torch::zeros({1}, torch::TensorOptions().device(options_.device));
  return AllReduceFlat(token, /*max=*/false);
}

Status Gang::CheckSame(double value, const std::string& what) {
  if (options_.world_size == 1) return OkStatus();
  // One MAX over (v, -v) gives the largest and the smallest value at once.
  torch::Tensor both = torch::tensor({value, -value}, torch::kFloat64).to(options_.device);
  RETURN_IF_ERROR(AllReduceFlat(both, /*max=*/true));
  both = both.cpu();
  const double largest = both[0].item<double>();
  const double smallest = -both[1].item<double>();
  if (largest != smallest) {
    char buffer[160];
    std::snprintf(buffer, sizeof buffer, " differs across the gang: from %.17g to %.17g", smallest, largest);
    return FailedPreconditionError("gang rank " + std::to_string(options_.rank) + ": " + what + buffer);
  }
  return OkStatus();
}

}  // namespace dtm
