#include "worker/engine/calibration.h"

#include <memory>
#include <utility>

#include "common/probe_file.h"
#include "worker/engine/baseline.h"
#include "worker/engine/engine_error.h"
#include "worker/engine/gptq.h"
#include "worker/engine/llama_model.h"

namespace dtm {
namespace {

int64_t SiteInputs(const LlamaConfig& c, LinearInputSite site) {
  switch (site) {
    case LinearInputSite::kMlpHidden: return c.intermediate_size;
    case LinearInputSite::kAttentionOut: return c.num_attention_heads * c.head_dim();
    default: return c.hidden_size;
  }
}

}  // namespace

StatusOr<CalibrationSequences> ReadCalibrationFile(const std::string& path, int64_t count, int64_t seq_len,
                                                   const LlamaConfig& config) {
  const std::string where = "calibration file " + path;
  StatusOr<ProbeSet> set = ReadProbeFile(path);
  if (!set.ok()) {
    // The reader's messages start with the path already.
    const std::string& m = set.status().message();
    return Status(set.status().code(), m.rfind(path, 0) == 0 ? "calibration file " + m : where + ": " + m);
  }
  RETURN_IF_ERROR(ValidateProbeSetForModel(*set, config, 0, where));
  ASSIGN_OR_RETURN(CalibrationSequences cut, CutCalibrationSet(std::move(set).value(), count, seq_len, where));
  RETURN_IF_ERROR(CheckCalibrationSet(cut, config, where));
  return cut;
}

Status CheckCalibrationSet(const CalibrationSequences& set, const LlamaConfig& config, const std::string& where) {
  if (set.sequences.empty()) return InvalidArgumentError(where + ": holds no sequences");
  if (set.seq_len < 1 || set.seq_len > config.max_position_embeddings) {
    return InvalidArgumentError(where + ": seq_len " + std::to_string(set.seq_len) +
                                " is outside [1, max_position_embeddings " +
                                std::to_string(config.max_position_embeddings) + "]");
  }
  for (size_t i = 0; i < set.sequences.size(); ++i) {
    const std::vector<int32_t>& s = set.sequences[i];
    if (static_cast<int64_t>(s.size()) != set.seq_len) {
      return InvalidArgumentError(where + ": sequence " + std::to_string(i) + " has " + std::to_string(s.size()) +
                                  " tokens, not seq_len " + std::to_string(set.seq_len));
    }
    for (int32_t t : s) {
      if (t < 0 || t >= config.vocab_size) {
        return InvalidArgumentError(where + ": sequence " + std::to_string(i) + " holds token " + std::to_string(t) +
                                    ", outside the vocabulary of " + std::to_string(config.vocab_size));
      }
    }
  }
  const std::string actual = CalibrationFingerprint(set.seq_len, set.sequences);
  if (actual != set.fingerprint) {
    return InvalidArgumentError(where + ": its content has fingerprint " + actual.substr(0, 12) + ", not the " +
                                set.fingerprint.substr(0, 12) + " it is named by");
  }
  return OkStatus();
}

CalibrationHessians::CalibrationHessians(CalibrationSequences set, int64_t batch_size)
    : set_(std::move(set)), batch_size_(batch_size) {}

StatusOr<std::map<LinearInputSite, torch::Tensor>> CalibrationHessians::LayerHessians(
    LlamaModel& model, int layer, const std::vector<LinearInputSite>& sites, bool below_uncompressed) {
  std::map<LinearInputSite, torch::Tensor> out;
  std::map<LinearInputSite, std::unique_ptr<HessianAccumulator>> pending;
  for (LinearInputSite site : sites) {
    if (out.count(site) || pending.count(site)) continue;
    auto cached = cached_.find({layer, site});
    if (below_uncompressed && cached != cached_.end()) {
      out[site] = cached->second;
      continue;
    }
    pending[site] = std::make_unique<HessianAccumulator>(SiteInputs(model.config(), site), model.options().device);
  }
  if (pending.empty()) return out;
  if (set_.sequences.empty()) return FailedPreconditionError("GPTQ needs calibration sequences and none were given");

  model.SetInputObserver([&](int l, LinearInputSite site, const torch::Tensor& x) {
    if (l != layer) return;
    auto it = pending.find(site);
    if (it != pending.end()) it->second->Add(x);
  });
  torch::NoGradGuard no_grad;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (const auto& s : set_.sequences) shapes.emplace_back(0, static_cast<int64_t>(s.size()));
  try {
    for (const std::vector<size_t>& batch : BatchRows(shapes, batch_size_)) {
      std::vector<const std::vector<int32_t>*> rows;
      for (size_t i : batch) rows.push_back(&set_.sequences[i]);
      // Layers above `layer` would see nothing this call keeps: they are not run.
      model.ForwardLayers(StackTokens(rows, static_cast<int64_t>(rows[0]->size())), layer + 1);
    }
  } catch (const std::exception& e) {
    model.SetInputObserver(nullptr);
    return StatusFromException(e, "calibration forward failed");
  }
  model.SetInputObserver(nullptr);
  ++passes_;
  for (auto& [site, acc] : pending) {
    out[site] = acc->hessian();
    if (below_uncompressed) cached_[{layer, site}] = acc->hessian();
  }
  return out;
}

}  // namespace dtm
