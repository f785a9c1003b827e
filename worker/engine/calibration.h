// GPTQ calibration: the Hessians 2/n sum x x^T of the inputs each linear site sees on
// calibration sequences, collected from the uncompressed model and kept for reuse.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "common/components.h"
#include "common/status.h"

namespace dtm {

class LlamaModel;
struct LlamaConfig;

// The first `count` sequences of a calibration file (a probe or baseline file: each row's "tokens";
// they may differ in length), for `dtmctl eval`/`apply --calibration` and dtm-worker
// --calibration. The whole file must pass ValidateProbeSetForModel (unique non-empty ids, tokens
// within the vocabulary, sequences within the context), so that a bad file fails when it is read,
// in one line starting "calibration file PATH: " and naming the row, never inside a forward pass.
StatusOr<std::vector<std::vector<int32_t>>> ReadCalibrationFile(const std::string& path, int64_t count,
                                                                const LlamaConfig& config);

// Not thread-safe: used by one evaluator on one replica.
class CalibrationHessians {
 public:
  // Sequences of equal or varying length; SPEC's default is 128 sequences of 2048 tokens.
  CalibrationHessians(std::vector<std::vector<int32_t>> sequences, int64_t batch_size);

  // Computes, in one pass over the calibration sequences, the Hessians of the given sites that are
  // not cached yet. The model must be uncompressed when this runs.
  Status Prepare(LlamaModel& model, const std::vector<std::pair<int, LinearInputSite>>& sites);
  // A prepared Hessian, [in, in] float32 on the model's device.
  StatusOr<torch::Tensor> Get(int layer, LinearInputSite site) const;
  int64_t num_sequences() const { return static_cast<int64_t>(sequences_.size()); }

 private:
  std::vector<std::vector<int32_t>> sequences_;
  int64_t batch_size_;
  std::map<std::pair<int, int>, torch::Tensor> hessians_;
};

}  // namespace dtm
