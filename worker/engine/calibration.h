// GPTQ calibration: the Hessians 2/n sum x x^T of the inputs each linear site sees on calibration
// sequences. As in the reference implementation (SPEC, gptq), a config's layers are quantized in
// order and each layer's Hessians come from inputs that pass through the earlier layers as the
// config compresses them; Hessians taken while nothing below their layer is compressed are the
// same for every config, so those are kept for reuse.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "common/calibration_set.h"
#include "common/components.h"
#include "common/status.h"

namespace dtm {

class LlamaModel;
struct LlamaConfig;

// The calibration set of a file (a probe or baseline file) as a job's `calibration:` cuts it
// (common/calibration_set.h: the first `count` rows, each cut to seq_len tokens), for `dtmctl eval`
// and `apply --calibration`. The file must pass ValidateProbeSetForModel (unique non-empty ids,
// tokens within the vocabulary, sequences within the context), so that a bad file fails when it is
// read, in one line starting "calibration file PATH: " and naming the row, never in a forward pass.
StatusOr<CalibrationSequences> ReadCalibrationFile(const std::string& path, int64_t count, int64_t seq_len,
                                                   const LlamaConfig& config);

// A set received from elsewhere (a coordinator) checked before it is used: every sequence has
// seq_len tokens, the fingerprint is that of the content, tokens are within the vocabulary and
// seq_len within the context. INVALID_ARGUMENT starting with `where` otherwise.
Status CheckCalibrationSet(const CalibrationSequences& set, const LlamaConfig& config, const std::string& where);

// Not thread-safe: used by one evaluator on one replica.
class CalibrationHessians {
 public:
  // SPEC's default is 128 sequences of 2048 tokens.
  CalibrationHessians(CalibrationSequences set, int64_t batch_size);

  // The Hessians ([in, in] float32 on the model's device) of `sites`, all of layer `layer`, from
  // one pass over the calibration sequences through layers [0, layer] of the model as it is now.
  // `below_uncompressed`: no weight below `layer` differs from the loaded model (the caller
  // knows), so the result is every config's and is cached; otherwise it is computed afresh.
  StatusOr<std::map<LinearInputSite, torch::Tensor>> LayerHessians(LlamaModel& model, int layer,
                                                                   const std::vector<LinearInputSite>& sites,
                                                                   bool below_uncompressed);
  int64_t num_sequences() const { return static_cast<int64_t>(set_.sequences.size()); }
  const std::string& fingerprint() const { return set_.fingerprint; }
  // Calibration passes run so far (one per LayerHessians call that was not answered from the cache).
  int64_t passes() const { return passes_; }

 private:
  CalibrationSequences set_;
  int64_t batch_size_;
  std::map<std::pair<int, LinearInputSite>, torch::Tensor> cached_;
  int64_t passes_ = 0;
};

}  // namespace dtm
