// AdamW exactly as PyTorch computes it (torch.optim.AdamW: decoupled weight decay, bias-corrected
// moments, no amsgrad), over tensors the caller owns. Its state is plain tensors the caller can
// save and restore bit for bit (a training checkpoint), and it updates whatever tensors it is
// given, so a sharded optimizer (ZeRO-1) can run it on each rank's slice of the flat parameters.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace dtm {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.01;  // SPEC "Recovery training"
};

class AdamW {
 public:
  // `params` are updated in place; each gets zero moments of its shape, dtype and device.
  AdamW(std::vector<torch::Tensor> params, AdamWOptions options);

  // One optimizer step at learning rate `lr`, `grads[i]` the gradient of `params[i]`. Per tensor:
  //   p *= 1 - lr * weight_decay;  m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
  //   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
  // with t the step count after this step (PyTorch's order of operations, so results match it).
  void Step(const std::vector<torch::Tensor>& grads, double lr);

  // Steps taken; with the moments, everything a resumed run needs.
  int64_t steps() const { return steps_; }
  void set_steps(int64_t steps) { steps_ = steps; }
  std::vector<torch::Tensor>& exp_avg() { return exp_avg_; }
  std::vector<torch::Tensor>& exp_avg_sq() { return exp_avg_sq_; }
  const std::vector<torch::Tensor>& params() const { return params_; }

 private:
  std::vector<torch::Tensor> params_;
  AdamWOptions options_;
  std::vector<torch::Tensor> exp_avg_;
  std::vector<torch::Tensor> exp_avg_sq_;
  int64_t steps_ = 0;
};

}  // namespace dtm
