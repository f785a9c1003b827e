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
struct LlamaConfig;

// Rows are batched by equal (prefix_len, length); `on_batch(done, total)` reports progress.
struct GenerateOptions {
  int64_t completion_len = 500;
  int64_t batch_size = 8;
  std::function<void(int64_t done, int64_t total)> on_progress;
  std::string source = "probes";  // names the probe set in errors: a file path, a task
};

// Greedy completion of every probe. INVALID_ARGUMENT, naming options.source and the probe, unless
// the probes pass ValidateProbeSetForModel and all have one length (a baseline has one prefix
// length n: common/input_checks.h); RESOURCE_EXHAUSTED when the device runs out of memory.
StatusOr<Baseline> GenerateBaseline(LlamaModel& model, const ProbeSet& probes, const GenerateOptions& options);

// The checks every token set passes before it reaches the model, so that libtorch never sees an id
// outside the vocabulary ("index out of range in self") or a sequence beyond the context. Both run
// on config.json alone, so that a command checks its files before it loads the weights.
// A baseline: CheckBaseline (unique non-empty ids, one prefix_len and one length for every row,
// token ids below vocab_size) and prefix + completion within max_position_embeddings.
Status ValidateBaselineForModel(const Baseline& baseline, const LlamaConfig& config, const std::string& source);
Status ValidateBaselineForModel(const Baseline& baseline, const LlamaModel& model, const std::string& source);
// A probe set (probes to complete by `completion_len` tokens, or calibration sequences with
// completion_len 0): CheckProbeSet, and every probe + completion within max_position_embeddings.
Status ValidateProbeSetForModel(const ProbeSet& probes, const LlamaConfig& config, int64_t completion_len,
                                const std::string& source);

// Indices of rows grouped by equal (prefix_len, length), each group cut into batches of at most
// batch_size, in first-appearance order: rows of one batch stack into one [B, N] tensor.
std::vector<std::vector<size_t>> BatchRows(const std::vector<std::pair<int64_t, int64_t>>& shapes, int64_t batch_size);

// The first `length` ids of each row as one int64 CPU tensor [rows, length].
torch::Tensor StackTokens(const std::vector<const std::vector<int32_t>*>& rows, int64_t length);

}  // namespace dtm
