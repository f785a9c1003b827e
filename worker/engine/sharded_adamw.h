// ShardedAdamW: AdamW with its moments sharded across a gang (ZeRO-1, Rajbhandari et al. 2020):
// the parameters, laid end to end as one flat vector of N floats, are cut into W equal ranges
// (the last padded), and member r keeps the moments of range r only, 8N/W bytes instead of 8N.
// A step takes the full gradients (summed across the gang, identical on every member), updates the
// member's range with AdamW's arithmetic (adamw.h), then all-gathers the ranges so that every member
// holds all new parameters. AdamW is elementwise, so the result equals the replicated optimizer's
// bit for bit.
//
// The gradients arrive by all-reduce (Gloo's reduce-scatter is missing from libtorch 1.13), so
// only the optimizer state is sharded, not the gradients.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

#include "common/status.h"
#include "worker/engine/adamw.h"
#include "worker/engine/gang.h"

namespace dtm {

class ShardedAdamW {
 public:
  // `params` are updated in place; `gang` (not owned) must outlive this.
  ShardedAdamW(std::vector<torch::Tensor> params, AdamWOptions options, Gang* gang);

  // One step at `lr` with the full gradients of every param; UNAVAILABLE when the gang fails.
  Status Step(const std::vector<torch::Tensor>& grads, double lr);
  // Zeroes the moments of this member's range where `masks[i]` (per param; undefined = none) is false.
  void MaskMoments(const std::vector<torch::Tensor>& masks);

  // This member's range [begin, end) of the flat parameters, and its optimizer (one flat tensor).
  int64_t begin() const { return begin_; }
  int64_t end() const { return end_; }
  AdamW& shard() { return *shard_; }

 private:
  // Calls fn(param index, offset in the param, offset in the shard, length) for every overlap of
  // this member's range with a param.
  template <typename Fn>
  void ForEachPiece(Fn fn) const;

  std::vector<torch::Tensor> params_;
  std::vector<int64_t> offsets_;  // of each param in the flat vector
  Gang* gang_;
  int64_t total_ = 0;
  int64_t range_ = 0;  // elements per member, the last range padded
  int64_t begin_ = 0;
  int64_t end_ = 0;
  torch::Tensor shard_params_;  // range_ floats: this member's parameters (padding zero)
  torch::Tensor shard_grads_;
  std::unique_ptr<AdamW> shard_;
};

}  // namespace dtm
