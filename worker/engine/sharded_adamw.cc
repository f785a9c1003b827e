#include "worker/engine/sharded_adamw.h"

#include <algorithm>

namespace dtm {

ShardedAdamW::ShardedAdamW(std::vector<torch::Tensor> params, AdamWOptions options, Gang* gang)
    : params_(std::move(params)), gang_(gang) {
  for (const torch::Tensor& p : params_) {
    offsets_.push_back(total_);
    total_ += p.numel();
  }
  const int64_t members = gang_->world_size();
  range_ = (total_ + members - 1) / members;
  begin_ = std::min(total_, range_ * gang_->rank());
  end_ = std::min(total_, begin_ + range_);
  shard_params_ = torch::zeros({range_}, torch::kFloat32);
  shard_grads_ = torch::zeros({range_}, torch::kFloat32);
  shard_ = std::make_unique<AdamW>(std::vector<torch::Tensor>{shard_params_}, options);
}

template <typename Fn>
void ShardedAdamW::ForEachPiece(Fn fn) const {
  for (size_t i = 0; i < params_.size(); ++i) {
    const int64_t lo = std::max(begin_, offsets_[i]);
    const int64_t hi = std::min(end_, offsets_[i] + params_[i].numel());
    if (lo < hi) fn(i, lo - offsets_[i], lo - begin_, hi - lo);
  }
}

Status ShardedAdamW::Step(const std::vector<torch::Tensor>& grads, double lr) {
  torch::NoGradGuard no_grad;
  ForEachPiece([&](size_t i, int64_t at, int64_t into, int64_t n) {
    shard_params_.slice(0, into, into + n).copy_(params_[i].reshape({-1}).slice(0, at, at + n));
    shard_grads_.slice(0, into, into + n).copy_(grads[i].reshape({-1}).slice(0, at, at + n));
  });
  shard_->Step({shard_grads_}, lr);
  torch::Tensor all;
  RETURN_IF_ERROR(gang_->AllGather(shard_params_, &all));
  for (size_t i = 0; i < params_.size(); ++i) {
    params_[i].view({-1}).copy_(all.slice(0, offsets_[i], offsets_[i] + params_[i].numel()));
  }
  return OkStatus();
}

void ShardedAdamW::MaskMoments(const std::vector<torch::Tensor>& masks) {
  torch::NoGradGuard no_grad;
  ForEachPiece([&](size_t i, int64_t at, int64_t into, int64_t n) {
    if (!masks[i].defined()) return;
    torch::Tensor keep = masks[i].reshape({-1}).slice(0, at, at + n).to(torch::kFloat32);
    shard_->exp_avg()[0].slice(0, into, into + n).mul_(keep);
    shard_->exp_avg_sq()[0].slice(0, into, into + n).mul_(keep);
  });
}

}  // namespace dtm
