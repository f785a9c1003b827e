// Gang: the members of one data-parallel training run, joined through libtorch's c10d (SPEC
// "Recovery training": gradients averaged across ranks by an all-reduce). Gloo on CPU, as Debian's
// libtorch 1.13 ships it; NCCL for CUDA members when the build's libtorch brings ProcessGroupNCCL
// (DTM_WITH_NCCL, set by CMake for a CUDA libtorch). The same calls either way; no collective is
// written here: each call is c10d's.
//
// Rendezvous: rank 0 runs a c10d::TCPStore server on master_host:master_port (port 0: a free port,
// then port() says which); the other ranks connect to it; the process group's constructor
// (Gloo's) or its first collective (NCCL's) waits until every rank has joined, at most `timeout`.
// Every collective waits at most `timeout` too, so a member that dies ends the others' calls with
// an error instead of a hang.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/status.h"

namespace dtm {

struct GangOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_host = "127.0.0.1";  // where rank 0's store listens, as the others reach it
  int master_port = 0;                     // 0 on rank 0: any free port (port() tells)
  std::string bind_host = "127.0.0.1";     // the address this member's Gloo transport binds (its pod IP on a cluster)
  std::chrono::milliseconds timeout{std::chrono::seconds(60)};
  // Where this member's tensors live; the collectives' scratch tensors (barrier, checks) go there.
  torch::Device device = torch::kCPU;
  // "gloo", "nccl", or "" for NCCL when the device is CUDA and NcclBuiltIn(), else Gloo. Gloo also
  // reduces CUDA tensors (through host copies), so a CUDA build without NCCL still trains, slowly.
  std::string backend;
  // Elements per all-reduce bucket: gradients are flattened into buckets of about this size, so the
  // extra memory stays bounded (25 M floats = 100 MB, as DDP's default bucket) whatever the model.
  int64_t bucket_elements = 25'000'000;
  // Rank 0 only: called with the port its store listens on as soon as it does, before Join waits for
  // the other members, so that a caller who gave port 0 can tell them (no port chosen beforehand
  // that another process could take meanwhile, as with FreeLoopbackPort).
  std::function<void(int)> on_listening;
};

// A TCP port free on 127.0.0.1 now (the kernel's pick for a socket bound to port 0, then closed),
// for member 0 of a gang whose members all run on this machine (tests, benchmarks, one-machine
// gangs); 0 when none could be had. Another process may take it before member 0 does.
int FreeLoopbackPort();

// Whether this build can make NCCL gangs (a CUDA libtorch with ProcessGroupNCCL).
bool NcclBuiltIn();

class Gang {
 public:
  // Joins the gang; returns once every member has (UNAVAILABLE naming the rank, host and port when
  // that does not happen within the timeout). INVALID_ARGUMENT for a rank outside [0, world_size),
  // or NCCL asked of a build without it or for a device that is not CUDA.
  static StatusOr<std::unique_ptr<Gang>> Join(const GangOptions& options);
  ~Gang();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  int port() const { return port_; }
  const std::string& backend() const { return backend_; }  // "gloo" or "nccl"

  // Sums each tensor (float32, contiguous, on options.device) across the gang in place, in
  // buckets. UNAVAILABLE when a member is gone or the timeout passes.
  Status AllReduceSum(std::vector<torch::Tensor>& tensors);
  // Every member's `mine` (float32, the same size on each), concatenated in rank order into `all`.
  Status AllGather(const torch::Tensor& mine, torch::Tensor* all);
  // Returns once every member has called it (or UNAVAILABLE after the timeout).
  Status Barrier();
  // Fails (FAILED_PRECONDITION, naming `what` and the smallest and largest values) when the members
  // hold different values: the check that their weights stayed identical.
  Status CheckSame(double value, const std::string& what);

 private:
  struct Group;  // the c10d store and process group, kept out of this header (and its c10d includes)
  Gang(GangOptions options, int port, std::string backend, std::unique_ptr<Group> group);
  // All-reduces one flat float32 or float64 tensor in place with SUM, or MAX when `max`.
  Status AllReduceFlat(torch::Tensor& flat, bool max);

  GangOptions options_;
  int port_;
  std::string backend_;
  std::unique_ptr<Group> group_;
};

}  // namespace dtm
