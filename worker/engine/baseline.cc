#include "worker/engine/baseline.h"

#include <map>

#include <torch/torch.h>

#include "common/input_checks.h"
#include "common/user_text.h"
#include "worker/engine/engine_error.h"
#include "worker/engine/llama_model.h"

namespace dtm {
namespace {

// `what` names the length: "prefix + completion", or "the sequence" for calibration.
Status CheckContext(int64_t length, int64_t max_positions, const std::string& where, const std::string& what) {
  if (length > max_positions) {
    return InvalidArgumentError(where + ": " + what + " = " + std::to_string(length) +
                                " tokens exceeds the model's context of " + std::to_string(max_positions) +
                                " (max_position_embeddings)");
  }
  return OkStatus();
}

}  // namespace

torch::Tensor StackTokens(const std::vector<const std::vector<int32_t>*>& rows, int64_t length) {
  torch::Tensor out = torch::empty({static_cast<int64_t>(rows.size()), length}, torch::kInt64);
  auto acc = out.accessor<int64_t, 2>();
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t j = 0; j < length; ++j) acc[i][j] = (*rows[i])[j];
  }
  return out;
}

std::vector<std::vector<size_t>> BatchRows(const std::vector<std::pair<int64_t, int64_t>>& shapes, int64_t batch_size) {
  std::vector<std::vector<size_t>> batches;
  std::map<std::pair<int64_t, int64_t>, size_t> open;  // shape -> index of its unfilled batch
  for (size_t i = 0; i < shapes.size(); ++i) {
    auto it = open.find(shapes[i]);
    if (it == open.end() || static_cast<int64_t>(batches[it->second].size()) >= batch_size) {
      batches.emplace_back();
      it = open.insert_or_assign(shapes[i], batches.size() - 1).first;
    }
    batches[it->second].push_back(i);
  }
  return batches;
}

Status ValidateBaselineForModel(const Baseline& baseline, const LlamaConfig& config, const std::string& source) {
  RETURN_IF_ERROR(CheckBaseline(baseline, source, config.vocab_size));
  // Every row has the first row's length (CheckBaseline).
  return CheckContext(static_cast<int64_t>(baseline.rows.front().tokens.size()), config.max_position_embeddings, source,
                      "prefix + completion");
}

Status ValidateBaselineForModel(const Baseline& baseline, const LlamaModel& model, const std::string& source) {
  return ValidateBaselineForModel(baseline, model.config(), source);
}

Status ValidateProbeSetForModel(const ProbeSet& probes, const LlamaConfig& config, int64_t completion_len,
                                const std::string& source) {
  RETURN_IF_ERROR(CheckProbeSet(probes, source, config.vocab_size));
  for (size_t i = 0; i < probes.probes.size(); ++i) {
    const Probe& p = probes.probes[i];
    RETURN_IF_ERROR(CheckContext(static_cast<int64_t>(p.tokens.size()) + completion_len, config.max_position_embeddings,
                                 source + ": probe " + std::to_string(i + 1) + " (id " + Quoted(p.id) + ")",
                                 completion_len > 0 ? "prefix + completion" : "the sequence"));
  }
  return OkStatus();
}

StatusOr<Baseline> GenerateBaseline(LlamaModel& model, const ProbeSet& probes, const GenerateOptions& options) {
  if (options.completion_len < 1) return InvalidArgumentError("--completion must be at least 1");
  if (options.batch_size < 1) return InvalidArgumentError("--batch-size must be at least 1");
  RETURN_IF_ERROR(ValidateProbeSetForModel(probes, model.config(), options.completion_len, options.source));
  RETURN_IF_ERROR(CheckEqualProbeLengths(probes, options.source));
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (const Probe& p : probes.probes) {
    const int64_t n = static_cast<int64_t>(p.tokens.size());
    shapes.emplace_back(n, n);
  }
  Baseline baseline;
  baseline.rows.resize(probes.probes.size());
  int64_t done = 0;
  for (const std::vector<size_t>& batch : BatchRows(shapes, options.batch_size)) {
    std::vector<const std::vector<int32_t>*> prefixes;
    for (size_t i : batch) prefixes.push_back(&probes.probes[i].tokens);
    const int64_t n = static_cast<int64_t>(prefixes[0]->size());
    torch::Tensor out;
    try {
      out = model.GenerateGreedy(StackTokens(prefixes, n), options.completion_len).cpu();
    } catch (const std::exception& e) {
      return StatusFromException(e, "greedy generation failed");
    }
    auto acc = out.accessor<int64_t, 2>();
    for (size_t b = 0; b < batch.size(); ++b) {
      BaselineRow& row = baseline.rows[batch[b]];
      row.id = probes.probes[batch[b]].id;
      row.prefix_len = n;
      row.tokens.resize(out.size(1));
      for (int64_t j = 0; j < out.size(1); ++j) row.tokens[j] = static_cast<int32_t>(acc[b][j]);
    }
    done += static_cast<int64_t>(batch.size());
    if (options.on_progress) options.on_progress(done, static_cast<int64_t>(probes.probes.size()));
  }
  return baseline;
}

}  // namespace dtm
