#include "worker/engine/evaluator.h"

#include <algorithm>
#include <cmath>
#include <memory>

#include "common/sha256.h"
#include "worker/engine/activation_cache.h"
#include "worker/engine/calibration.h"
#include "worker/engine/compression.h"
#include "worker/engine/engine_error.h"
#include "worker/engine/gptq.h"
#include "worker/engine/llama_model.h"

namespace dtm {
namespace {

// LLM.int8() as a forward override, with the weight quantized once when the config is applied.
// Outlier columns are found per sequence (one call per batch row), so a probe's result does not
// depend on which probes share its batch. When `outlier_counts` is defined ([B] int64 on x's device),
// row b gains the number of outlier columns of sequence b; the counts stay on the device, so that
// counting adds no host sync to the forward.
torch::Tensor LlmInt8Forward(const torch::Tensor& x, const LlmInt8Weight& w, const torch::Tensor& outlier_counts) {
  const bool count = outlier_counts.defined() && outlier_counts.size(0) == x.size(0);
  std::vector<torch::Tensor> rows;
  rows.reserve(x.size(0));
  for (int64_t b = 0; b < x.size(0); ++b) {
    torch::Tensor outliers;
    rows.push_back(LlmInt8Matmul(x[b], w, kLlmInt8Threshold, &outliers));
    if (count) outlier_counts[b].add_(outliers.sum());
  }
  return torch::stack(rows).to(x.scalar_type());
}

struct Batch {
  std::vector<size_t> rows;
  int64_t prefix_len;
  torch::Tensor tokens;  // [B, N]
};

std::vector<Batch> MakeBatches(const std::vector<const std::vector<int32_t>*>& sequences,
                               const std::vector<int64_t>& prefix_lens, int64_t batch_size) {
  std::vector<std::pair<int64_t, int64_t>> shapes;
  for (size_t i = 0; i < sequences.size(); ++i) {
    shapes.emplace_back(prefix_lens[i], static_cast<int64_t>(sequences[i]->size()));
  }
  std::vector<Batch> batches;
  for (std::vector<size_t>& rows : BatchRows(shapes, batch_size)) {
    std::vector<const std::vector<int32_t>*> seqs;
    for (size_t i : rows) seqs.push_back(sequences[i]);
    const int64_t prefix_len = prefix_lens[rows[0]];
    torch::Tensor tokens = StackTokens(seqs, static_cast<int64_t>(seqs[0]->size()));
    batches.push_back({std::move(rows), prefix_len, tokens});
  }
  return batches;
}

// `hidden`: the batch's hidden states after the final norm; logits at positions [n-1, N-1) predict
// tokens [n, N).
std::vector<ProbeDivergence> ScoreBatch(const LlamaModel& model, const Batch& batch, const torch::Tensor& hidden) {
  const int64_t n = batch.prefix_len, total = batch.tokens.size(1);
  torch::Tensor logits = model.Logits(hidden.slice(1, n - 1, total - 1));
  return DivergenceFromLogits(logits, batch.tokens.slice(1, n, total));
}

// Names the rows and their batching: a batch's streams are kept under this and the batch's index.
std::string BaselineDigest(const Baseline& baseline, int64_t batch_size) {
  Sha256 h;
  const std::string head = "dtm-streams-v1 batch=" + std::to_string(batch_size) + "\n";
  h.Update(head);
  for (const BaselineRow& row : baseline.rows) {
    const int64_t sizes[2] = {row.prefix_len, static_cast<int64_t>(row.tokens.size())};
    h.Update(sizes, sizeof(sizes));
    h.Update(row.tokens.data(), row.tokens.size() * sizeof(int32_t));
  }
  return h.HexDigest();
}

// The lowest layer at which `a` and `b` compress something differently; `num_layers` when they agree.
int FirstDifferingLayer(const CompressionConfig& a, const CompressionConfig& b, int num_layers) {
  std::map<int, const CompressionMethod*> in_b;
  for (const auto& [id, method] : b.entries) in_b[id.Index()] = &method;
  int lowest = num_layers;
  for (const auto& [id, method] : a.entries) {
    auto it = in_b.find(id.Index());
    if (it == in_b.end() || *it->second != method) lowest = std::min(lowest, id.layer);
    if (it != in_b.end()) in_b.erase(it);
  }
  for (const auto& [index, method] : in_b) lowest = std::min(lowest, index / kComponentKindsPerLayer);
  return lowest;
}

}  // namespace

Evaluator::Evaluator(LlamaModel* model, CalibrationHessians* calibration) : model_(model), calibration_(calibration) {}

Evaluator::~Evaluator() { Restore(); }

Status Evaluator::ApplyOne(const ComponentId& id, const CompressionMethod& method, const torch::Tensor& hessian) {
  torch::Tensor& w = model_->ComponentWeight(id);
  saved_.emplace(id.Index(), w.clone());
  torch::Tensor compressed;
  switch (method.kind) {
    case MethodKind::kPrune: compressed = MagnitudePrune(w, method.fraction); break;
    case MethodKind::kRandomPrune: compressed = RandomPrune(w, method.fraction, method.seed); break;
    case MethodKind::kInt8AbsMax:
    case MethodKind::kInt8AbsMaxRow: {
      IntegerWeight codes = method.kind == MethodKind::kInt8AbsMax ? AbsMaxInt8Codes(w) : AbsMaxInt8RowsCodes(w);
      compressed = codes.Dequantize();
      KeepCodes(id, std::move(codes));
      break;
    }
    case MethodKind::kLlmInt8: {
      // Stored once, as bitsandbytes' Int8Params is; the override ignores the float weight it is passed.
      auto weight = std::make_shared<const LlmInt8Weight>(QuantizeLlmInt8Weight(w));
      model_->SetLinearOverride(id, [this, weight](const torch::Tensor& x, const torch::Tensor&) {
        return LlmInt8Forward(x, *weight, outlier_counts_);
      });
      overridden_.push_back(id);
      return OkStatus();
    }
    case MethodKind::kGptq: {
      GptqOptions opts;
      opts.bits = method.bits;
      opts.group_size = method.group_size;
      // The codes cost a copy per column (a kernel launch each on a GPU): made only when kept.
      if (integer_weights_ == nullptr) {
        StatusOr<torch::Tensor> q = GptqQuantize(w, hessian, opts);
        if (!q.ok()) return Status(q.status().code(), id.Name() + ": " + q.status().message());
        compressed = *q;
        break;
      }
      StatusOr<GptqResult> q = GptqQuantizeWithCodes(w, hessian, opts);
      if (!q.ok()) return Status(q.status().code(), id.Name() + ": " + q.status().message());
      compressed = q->dequantized;
      KeepCodes(id, std::move(q->codes));
      break;
    }
  }
  torch::NoGradGuard no_grad;
  w.copy_(compressed.to(w.scalar_type()));
  return OkStatus();
}

void Evaluator::KeepCodes(const ComponentId& id, IntegerWeight codes) {
  if (integer_weights_ == nullptr) return;
  codes.q = codes.q.cpu();
  codes.scale = codes.scale.cpu();
  if (codes.zero.defined()) codes.zero = codes.zero.cpu();
  (*integer_weights_)[id.Index()] = std::move(codes);
}

Status Evaluator::Apply(const CompressionConfig& config) {
  Restore();
  Status s = ApplyInLayerOrder(config);
  if (!s.ok()) {
    Restore();
    return s;
  }
  applied_ = config;
  applied_calibration_ = calibration_ != nullptr ? calibration_->fingerprint() : "";
  return s;
}

Status Evaluator::ApplyInLayerOrder(const CompressionConfig& config) {
  // SPEC, gptq, as the reference implementation: layers in order, and a layer's Hessians come from
  // inputs that pass through the layers below it as this config compresses them. So each layer is
  // compressed only after its Hessians are taken, and before those of any layer above.
  std::map<int, std::vector<std::pair<ComponentId, CompressionMethod>>> by_layer;
  for (const auto& [id, method] : config.entries) by_layer[id.layer].emplace_back(id, method);
  bool below_compressed = false;
  for (const auto& [layer, entries] : by_layer) {
    std::vector<LinearInputSite> sites;
    for (const auto& [id, method] : entries) {
      if (method.kind == MethodKind::kGptq) sites.push_back(InputSiteOf(id.kind));
    }
    std::map<LinearInputSite, torch::Tensor> hessians;
    if (!sites.empty()) {
      if (calibration_ == nullptr) return FailedPreconditionError("gptq needs a calibration set and none was given");
      ASSIGN_OR_RETURN(hessians, calibration_->LayerHessians(*model_, layer, sites, !below_compressed));
    }
    for (const auto& [id, method] : entries) {
      const torch::Tensor hessian = method.kind == MethodKind::kGptq ? hessians.at(InputSiteOf(id.kind)) : torch::Tensor();
      RETURN_IF_ERROR(ApplyOne(id, method, hessian));
    }
    below_compressed = true;
  }
  return OkStatus();
}

void Evaluator::Restore() {
  torch::NoGradGuard no_grad;
  for (auto& [index, original] : saved_) {
    ComponentId id{index / kComponentKindsPerLayer, static_cast<ComponentKind>(index % kComponentKindsPerLayer)};
    model_->ComponentWeight(id).copy_(original);
  }
  saved_.clear();
  for (const ComponentId& id : overridden_) model_->ClearLinearOverride(id);
  overridden_.clear();
  applied_ = CompressionConfig();
  applied_calibration_.clear();
}

std::string Evaluator::StreamKey(const std::string& batch_key, int layer) const {
  CompressionConfig below;
  bool gptq = false;
  for (const auto& entry : applied_.entries) {
    if (entry.first.layer >= layer) continue;
    below.entries.push_back(entry);
    gptq = gptq || entry.second.kind == MethodKind::kGptq;
  }
  // A gptq entry's weights, and so the stream above it, depend on the calibration set.
  std::string key = batch_key + "/layer=" + std::to_string(layer) + "/" + below.Canonical();
  if (gptq) key += "/calibration=" + applied_calibration_;
  return key;
}

torch::Tensor Evaluator::ForwardBatch(const torch::Tensor& tokens, const std::string& group,
                                      const std::string& batch_key, int keep_through, int64_t* layers_run) {
  const int num_layers = static_cast<int>(model_->config().num_hidden_layers);
  const auto key_of = [&](int layer) { return StreamKey(batch_key, layer); };
  torch::Tensor x;
  int start = 0;
  if (activations_ != nullptr) {
    std::vector<int> layers;  // the kept layers, deepest first
    for (int l = num_layers / activation_every_ * activation_every_; l >= activation_every_; l -= activation_every_) {
      layers.push_back(l);
    }
    if (const CachedStream* kept = activations_->FindFirst(layers, key_of, &start)) {
      x = kept->hidden;
      // Outliers counted below `start` by the entries the key names; none when it names no llm-int8.
      if (outlier_counts_.defined() && kept->outlier_counts.defined()) outlier_counts_.copy_(kept->outlier_counts);
    }
  }
  if (start == 0) x = model_->Embed(tokens);
  const auto keep = [&](int layer, const torch::Tensor& stream) {
    if (layer % activation_every_ != 0 || layer > keep_through) return;
    const std::string key = key_of(layer);
    if (activations_->Contains(key)) return;
    // `stream` is a fresh tensor the forward never writes again; the counts go on growing, so copy.
    activations_->Put(key, {stream, outlier_counts_.defined() ? outlier_counts_.clone() : torch::Tensor()}, group);
  };
  x = model_->RunLayersFrom(x, start, activations_ != nullptr ? std::function<void(int, const torch::Tensor&)>(keep)
                                                               : std::function<void(int, const torch::Tensor&)>());
  *layers_run += static_cast<int64_t>(num_layers - start) * tokens.size(0);
  return model_->FinalNorm(x);
}

StatusOr<EvalResult> Evaluator::Evaluate(const Baseline& baseline, const CompressionConfig& config,
                                         const EvalOptions& options) {
  RETURN_IF_ERROR(Apply(config));
  StatusOr<EvalResult> result = EvaluateCurrent(baseline, options);
  Restore();
  return result;
}

StatusOr<EvalResult> Evaluator::EvaluateCurrent(const Baseline& baseline, const EvalOptions& options) {
  if (options.batch_size < 1) return InvalidArgumentError("--batch-size must be at least 1");
  RETURN_IF_ERROR(ValidateBaselineForModel(baseline, *model_, "baseline"));
  std::vector<const std::vector<int32_t>*> sequences;
  std::vector<int64_t> prefix_lens;
  EvalResult result;
  for (const BaselineRow& row : baseline.rows) {
    sequences.push_back(&row.tokens);
    prefix_lens.push_back(row.prefix_len);
    result.ids.push_back(row.id);
    result.completion_len = std::max(result.completion_len, row.completion_len());
  }
  result.per_probe.resize(baseline.rows.size());
  result.outlier_columns.assign(baseline.rows.size(), 0);
  torch::NoGradGuard no_grad;
  int64_t done = 0;
  const int num_layers = static_cast<int>(model_->config().num_hidden_layers);
  const std::string digest = activations_ != nullptr ? BaselineDigest(baseline, options.batch_size) : "";
  const int keep_through = FirstDifferingLayer(applied_, options.parent, num_layers);
  result.streams_group = digest;
  size_t batch_index = 0;
  try {
    for (const Batch& batch : MakeBatches(sequences, prefix_lens, options.batch_size)) {
      const int64_t rows = static_cast<int64_t>(batch.rows.size());
      if (!overridden_.empty()) {
        outlier_counts_ = torch::zeros({rows}, torch::TensorOptions(model_->options().device).dtype(torch::kLong));
      }
      const std::string batch_key = digest + "/batch=" + std::to_string(batch_index++);
      torch::Tensor hidden = ForwardBatch(batch.tokens, digest, batch_key, keep_through, &result.layer_forwards);
      result.full_layer_forwards += static_cast<int64_t>(num_layers) * rows;
      std::vector<ProbeDivergence> scored = ScoreBatch(*model_, batch, hidden);
      torch::Tensor counts = outlier_counts_.defined() ? outlier_counts_.cpu() : torch::zeros({rows}, torch::kLong);
      outlier_counts_ = torch::Tensor();
      for (size_t i = 0; i < batch.rows.size(); ++i) {
        result.per_probe[batch.rows[i]] = scored[i];
        result.outlier_columns[batch.rows[i]] = counts[static_cast<int64_t>(i)].item<int64_t>();
      }
      done += rows;
      if (options.on_progress) options.on_progress(done, static_cast<int64_t>(sequences.size()));
    }
  } catch (const std::exception& e) {
    outlier_counts_ = torch::Tensor();
    return StatusFromException(e, "evaluation forward failed");
  }
  result.summary = Summarize(result.per_probe, result.completion_len);
  double outlier_sum = 0;
  for (int64_t c : result.outlier_columns) outlier_sum += static_cast<double>(c);
  if (!result.outlier_columns.empty()) {
    result.outlier_columns_mean = outlier_sum / static_cast<double>(result.outlier_columns.size());
  }
  return result;
}

StatusOr<PerplexityResult> Evaluator::Perplexity(const ProbeSet& windows, int64_t prefix_len, const EvalOptions& options) {
  Baseline truth;
  for (const Probe& p : windows.probes) {
    if (static_cast<int64_t>(p.tokens.size()) <= prefix_len) {
      return InvalidArgumentError("window " + p.id + " has no tokens after the prefix of " + std::to_string(prefix_len));
    }
    truth.rows.push_back({p.id, prefix_len, p.tokens});
  }
  ASSIGN_OR_RETURN(EvalResult scored, EvaluateCurrent(truth, options));
  PerplexityResult out;
  double nll_sum = 0;
  for (size_t i = 0; i < scored.per_probe.size(); ++i) {
    const int64_t m = truth.rows[i].completion_len();
    nll_sum += scored.per_probe[i].nll * static_cast<double>(m);
    out.tokens_scored += m;
  }
  out.windows = static_cast<int64_t>(scored.per_probe.size());
  out.nll_mean = out.tokens_scored > 0 ? nll_sum / static_cast<double>(out.tokens_scored) : 0;
  out.ppl = std::exp(out.nll_mean);
  return out;
}

}  // namespace dtm
