#include "worker/engine/calibration.h"

#include <memory>

#include "common/probe_file.h"
#include "worker/engine/baseline.h"
#include "worker/engine/engine_error.h"
#include "worker/engine/gptq.h"
#include "worker/engine/llama_model.h"

namespace dtm {

StatusOr<std::vector<std::vector<int32_t>>> ReadCalibrationFile(const std::string& path, int64_t count,
                                                                const LlamaConfig& config) {
  const std::string where = "calibration file " + path;
  if (count < 1) return InvalidArgumentError(where + ": the calibration count must be at least 1, got " + std::to_string(count));
  StatusOr<ProbeSet> set = ReadProbeFile(path);
  if (!set.ok()) {
    // The reader's messages start with the path already.
    const std::string& m = set.status().message();
    return Status(set.status().code(), m.rfind(path, 0) == 0 ? "calibration file " + m : where + ": " + m);
  }
  RETURN_IF_ERROR(ValidateProbeSetForModel(*set, config, 0, where));
  std::vector<std::vector<int32_t>> sequences;
  for (Probe& p : set->probes) {
    if (static_cast<int64_t>(sequences.size()) == count) break;
    sequences.push_back(std::move(p.tokens));
  }
  return sequences;
}

CalibrationHessians::CalibrationHessians(std::vector<std::vector<int32_t>> sequences, int64_t batch_size)
    : sequences_(std::move(sequences)), batch_size_(batch_size) {}

Status CalibrationHessians::Prepare(LlamaModel& model, const std::vector<std::pair<int, LinearInputSite>>& sites) {
  std::map<std::pair<int, int>, std::unique_ptr<HessianAccumulator>> pending;
  for (const auto& [layer, site] : sites) {
    std::pair<int, int> key{layer, static_cast<int>(site)};
    if (hessians_.count(key) || pending.count(key)) continue;
    const LlamaConfig& c = model.config();
    int64_t in = site == LinearInputSite::kMlpHidden ? c.intermediate_size
                 : site == LinearInputSite::kAttentionOut ? c.num_attention_heads * c.head_dim()
                                                          : c.hidden_size;
    pending[key] = std::make_unique<HessianAccumulator>(in, model.options().device);
  }
  if (pending.empty()) return OkStatus();
  if (sequences_.empty()) return FailedPreconditionError("GPTQ needs calibration sequences and none were given");

  model.SetInputObserver([&](int layer, LinearInputSite site, const torch::Tensor& x) {
    auto it = pending.find({layer, static_cast<int>(site)});
    if (it != pending.end()) it->second->Add(x);
  });
  torch::NoGradGuard no_grad;
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (const auto& s : sequences_) shapes.emplace_back(0, static_cast<int64_t>(s.size()));
  try {
    for (const std::vector<size_t>& batch : BatchRows(shapes, batch_size_)) {
      std::vector<const std::vector<int32_t>*> rows;
      for (size_t i : batch) rows.push_back(&sequences_[i]);
      model.Forward(StackTokens(rows, static_cast<int64_t>(rows[0]->size())));
    }
  } catch (const std::exception& e) {
    model.SetInputObserver(nullptr);
    return StatusFromException(e, "calibration forward failed");
  }
  model.SetInputObserver(nullptr);
  for (auto& [key, acc] : pending) hessians_[key] = acc->hessian();
  return OkStatus();
}

StatusOr<torch::Tensor> CalibrationHessians::Get(int layer, LinearInputSite site) const {
  auto it = hessians_.find({layer, static_cast<int>(site)});
  if (it == hessians_.end()) return InternalError("calibration Hessian of layer " + std::to_string(layer) + " not prepared");
  return it->second;
}

}  // namespace dtm
