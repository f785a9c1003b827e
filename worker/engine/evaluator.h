// Evaluation of one compression config against a baseline on a live replica: apply the config to
// the weights in place, one forward over every baseline sequence, restore the weights bit-exactly.
// With an activation cache, the forward starts from the deepest residual stream kept for the
// config's entries below it (worker/engine/activation_cache.h): the same numbers, fewer layers.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "worker/engine/baseline.h"
#include "common/compression_config.h"
#include "worker/engine/divergence.h"
#include "common/status.h"
#include "worker/engine/integer_weight.h"

namespace dtm {

class ActivationCache;
class CalibrationHessians;
class LlamaModel;

struct EvalOptions {
  int64_t batch_size = 8;
  std::function<void(int64_t done, int64_t total)> on_progress;
  // With an activation cache: the config the applied one extends (a tree-search node's parent; empty:
  // the uncompressed model). Streams are kept up to the lowest layer where the two differ, since
  // the parent's other children share those; never part of the result.
  CompressionConfig parent;
};

struct EvalResult {
  std::vector<std::string> ids;              // baseline row ids, in baseline order
  std::vector<ProbeDivergence> per_probe;    // in baseline order
  DivergenceSummary summary;
  int64_t completion_len = 0;                // the longest completion among the rows
  // Per probe, in baseline order: the number of outlier input columns (|x| >= 6.0 anywhere in the
  // probe's sequence, LLM.int8()'s test) summed over the config's llm-int8 components; 0 for every
  // probe of a config without llm-int8. The second axis of the paper's Fig. 5.
  std::vector<int64_t> outlier_columns;
  double outlier_columns_mean = 0;           // their mean over the probes
  // Decoder-layer forwards run (one per layer per sequence), and those a full forward would run.
  int64_t layer_forwards = 0;
  int64_t full_layer_forwards = 0;
  // With an activation cache: the group its streams of these rows are kept under
  // (ActivationCache::StreamsOf); empty without one.
  std::string streams_group;
};

struct PerplexityResult {
  double ppl = 0;          // exp of the mean NLL over every scored token
  double nll_mean = 0;
  int64_t windows = 0;
  int64_t tokens_scored = 0;
};

// Not thread-safe: one evaluator per replica.
class Evaluator {
 public:
  // `calibration` is needed only for gptq configs; it may be null otherwise.
  Evaluator(LlamaModel* model, CalibrationHessians* calibration);
  // Another calibration set for the configs applied from now on (null: none).
  void SetCalibration(CalibrationHessians* calibration) { calibration_ = calibration; }
  // Residual streams to reuse and keep (null: none, every forward runs from the embedding); kept at
  // the inputs of layers every, 2*every, ... The cache must be this replica's alone, and outlive
  // the evaluator or be unset first.
  void SetActivationCache(ActivationCache* cache, int every = 1) {
    activations_ = cache;
    activation_every_ = every < 1 ? 1 : every;
  }
  // While set, Apply also keeps, on the CPU, the integer codes of every int8-absmax, int8-absmax-row
  // and gptq component it applies (ComponentId::Index() -> codes; the weights it writes are their
  // Dequantize()), for `dtmctl apply --format compressed-tensors`. Null: none kept.
  void KeepIntegerWeights(std::map<int, IntegerWeight>* sink) { integer_weights_ = sink; }
  ~Evaluator();  // restores any applied config

  // Apply + evaluate + restore; the weights are restored on every path.
  StatusOr<EvalResult> Evaluate(const Baseline& baseline, const CompressionConfig& config, const EvalOptions& options);

  // The metrics of the model as it is now.
  StatusOr<EvalResult> EvaluateCurrent(const Baseline& baseline, const EvalOptions& options);

  // Ground-truth perplexity: each window's tokens after `prefix_len` are scored.
  StatusOr<PerplexityResult> Perplexity(const ProbeSet& windows, int64_t prefix_len, const EvalOptions& options);

  // Applies `config` in place (after restoring any earlier one); Restore() undoes it exactly. A
  // gptq component's Hessians come from the calibration set through the layers below it as the
  // config compresses them (SPEC, gptq).
  Status Apply(const CompressionConfig& config);
  void Restore();

 private:
  Status ApplyInLayerOrder(const CompressionConfig& config);
  // One batch's hidden states after the final norm, from the deepest kept stream when there is one;
  // keeps the streams of layers up to `keep_through` (the applied config's, shared by others).
  torch::Tensor ForwardBatch(const torch::Tensor& tokens, const std::string& group, const std::string& batch_key,
                             int keep_through, int64_t* layers_run);
  // The key of the stream at the input of `layer` under the applied config (its entries below layer).
  std::string StreamKey(const std::string& batch_key, int layer) const;
  // `hessian`: the component's input Hessian for gptq, else unused.
  Status ApplyOne(const ComponentId& id, const CompressionMethod& method, const torch::Tensor& hessian);
  void KeepCodes(const ComponentId& id, IntegerWeight codes);

  LlamaModel* model_;
  CalibrationHessians* calibration_;
  ActivationCache* activations_ = nullptr;
  int activation_every_ = 1;
  CompressionConfig applied_;                // what Apply applied, until Restore
  std::string applied_calibration_;          // the calibration fingerprint its gptq entries used
  std::map<int, torch::Tensor> saved_;       // ComponentId::Index() -> original weight
  std::vector<ComponentId> overridden_;      // components with an LLM.int8() forward
  std::map<int, IntegerWeight>* integer_weights_ = nullptr;
  // During one batch's forward with llm-int8 components: [B] int64 outlier column counts per batch row,
  // on the model's device, which the LLM.int8() overrides add to; undefined otherwise.
  torch::Tensor outlier_counts_;
};

}  // namespace dtm
