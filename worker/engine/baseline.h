// The baseline: the greedy completion G(F, y[:n], N) of every probe by the uncompressed model, and
// the baseline files other tools share: JSON lines {"id", "prefix_len", "tokens": prefix + completion}.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/baseline_file.h"
#include "common/probe_file.h"
#include "common/status.h"

namespace dtm {

class LlamaModel;

// Rows are batched by equal (prefix_len, length); `on_batch(done, total)` reports progress.
struct GenerateOptions {
  int64_t completion_len = 500;
  int64_t batch_size = 8;
  std::function<void(int64_t done, int64_t total)> on_progress;
};

// Greedy completion of every probe. Errors when a probe's id is empty, a token is outside the
// vocabulary or prefix + completion exceeds the model's context.
StatusOr<Baseline> GenerateBaseline(LlamaModel& model, const ProbeSet& probes, const GenerateOptions& options);

// Checks that a baseline fits the model (token ids, context length, a completion of at least one token).
Status ValidateBaselineForModel(const Baseline& baseline, const LlamaModel& model, const std::string& source);

// Indices of rows grouped by equal (prefix_len, length), each group cut into batches of at most
// batch_size, in first-appearance order: rows of one batch stack into one [B, N] tensor.
std::vector<std::vector<size_t>> BatchRows(const std::vector<std::pair<int64_t, int64_t>>& shapes, int64_t batch_size);

// The first `length` ids of each row as one int64 CPU tensor [rows, length].
torch::Tensor StackTokens(const std::vector<const std::vector<int32_t>*>& rows, int64_t length);

}  // namespace dtm
