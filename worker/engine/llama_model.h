// The Hugging Face LlamaForCausalLM forward pass in libtorch: batched, with a KV cache for greedy
// generation, and differentiable so that the tiny model trains through the same code.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "common/components.h"
#include "worker/engine/model_config.h"
#include "common/status.h"

namespace dtm {

class Checkpoint;

// Replaces `x w^T` for one component at every forward (e.g. LLM.int8(), which quantizes the
// activations as they come). Returns a tensor of x's dtype.
using LinearOverride = std::function<torch::Tensor(const torch::Tensor& x, const torch::Tensor& w)>;

// Sees the input of every linear site during a forward (GPTQ calibration Hessians).
using InputObserver = std::function<void(int layer, LinearInputSite site, const torch::Tensor& x)>;

struct LayerWeights {
  torch::Tensor input_layernorm;           // [D]
  torch::Tensor q_proj;                    // [H*hd, D]
  torch::Tensor k_proj;                    // [KVH*hd, D]
  torch::Tensor v_proj;                    // [KVH*hd, D]
  torch::Tensor o_proj;                    // [D, H*hd]
  torch::Tensor post_attention_layernorm;  // [D]
  torch::Tensor gate_proj;                 // [I, D]
  torch::Tensor up_proj;                   // [I, D]
  torch::Tensor down_proj;                 // [D, I]

  torch::Tensor& Component(ComponentKind kind);
};

// Keys and values of every layer for positions [0, length): [B, KVH, capacity, hd] each.
struct KvCache {
  std::vector<torch::Tensor> keys;
  std::vector<torch::Tensor> values;
  int64_t length = 0;
};

struct ModelOptions {
  torch::ScalarType dtype = torch::kFloat32;  // compute precision, whatever the stored dtype
  torch::Device device = torch::kCPU;
};

class LlamaModel {
 public:
  // Loads every weight of the checkpoint, checked against the config's shapes.
  static StatusOr<std::unique_ptr<LlamaModel>> Load(const Checkpoint& checkpoint, const ModelOptions& options);
  // A model with freshly initialised weights (normal(0, 0.02), norms at 1), as HF initialises Llama.
  static std::unique_ptr<LlamaModel> RandomInit(const LlamaConfig& config, const ModelOptions& options,
                                                uint64_t seed);

  const LlamaConfig& config() const { return config_; }
  const ModelOptions& options() const { return options_; }

  // The weight of one component, [out, in]; compression modifies it in place.
  torch::Tensor& ComponentWeight(const ComponentId& id);
  void SetLinearOverride(const ComponentId& id, LinearOverride override_fn);
  void ClearLinearOverride(const ComponentId& id);
  void SetInputObserver(InputObserver observer) { observer_ = std::move(observer); }
  // Activation checkpointing per decoder layer (training): while autograd records, each layer keeps
  // only its input and runs again in the backward pass, so activations cost one [B, T, D] tensor a
  // layer instead of every intermediate (recomputation: about a third more FLOPs). Gradients are
  // the same. Off by default; a forward with a cache or without grad is unaffected.
  void SetActivationCheckpointing(bool on) { activation_checkpointing_ = on; }

  // Every weight under its HF name, in checkpoint order (lm_head omitted when tied).
  std::vector<std::pair<std::string, torch::Tensor>> NamedWeights() const;
  // The distinct tensors to train.
  std::vector<torch::Tensor> Parameters() const;

  // Hidden states after the final norm, [B, T, D], for tokens [B, T] at positions
  // [start_pos, start_pos + T). With a cache, keys/values are appended at start_pos.
  torch::Tensor Forward(const torch::Tensor& tokens, KvCache* cache = nullptr, int64_t start_pos = 0);
  // The residual stream after the first `num_layers` decoder layers (no final norm, no cache): the
  // inputs GPTQ's calibration of layer num_layers - 1 needs, without running the layers above it.
  torch::Tensor ForwardLayers(const torch::Tensor& tokens, int num_layers);
  // The forward in parts, for a caller that starts from a residual stream it kept
  // (worker/engine/activation_cache.h); Forward(tokens) is exactly
  // FinalNorm(RunLayersFrom(Embed(tokens), 0, nullptr)), op for op, so results are bit-identical.
  // Embed: tokens [B, T] -> the input of layer 0, [B, T, D]. RunLayersFrom: layers
  // [first_layer, num_hidden_layers) on x, the input of first_layer, at positions from 0 without a
  // cache; `on_layer_input(l, x)` (may be null) sees the input of every layer l in
  // (first_layer, num_hidden_layers] as it is reached (l = num_hidden_layers: the last layer's output).
  torch::Tensor Embed(const torch::Tensor& tokens) const;
  torch::Tensor RunLayersFrom(torch::Tensor x, int first_layer,
                              const std::function<void(int layer, const torch::Tensor& x)>& on_layer_input);
  torch::Tensor FinalNorm(const torch::Tensor& x) const { return RmsNorm(x, norm_); }
  // lm_head: [..., D] -> [..., V] in the compute dtype.
  torch::Tensor Logits(const torch::Tensor& hidden) const;
  // One decoder layer on the residual stream x [B, T, D] at positions from 0, without a cache (what
  // a checkpointed layer runs, and runs again in the backward pass).
  torch::Tensor DecoderLayer(const torch::Tensor& x, int layer);

  // Greedy continuation of `prefix` [B, n] by `steps` tokens with a KV cache: [B, n + steps].
  // Never stops early (EOS included), as the metrics need exactly `steps` tokens.
  torch::Tensor GenerateGreedy(const torch::Tensor& prefix, int64_t steps);

  KvCache NewCache(int64_t batch, int64_t capacity) const;

 private:
  LlamaModel(LlamaConfig config, ModelOptions options);
  void BuildRope();
  // Embeds `tokens` and runs layers [0, num_layers); the residual stream, before the final norm.
  torch::Tensor RunLayers(const torch::Tensor& tokens, int num_layers, KvCache* cache, int64_t start_pos);
  torch::Tensor Linear(const torch::Tensor& x, int layer, ComponentKind kind);
  void Observe(int layer, LinearInputSite site, const torch::Tensor& x) const;
  torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const;
  torch::Tensor ApplyRope(const torch::Tensor& x, int64_t start_pos) const;
  torch::Tensor Attention(const torch::Tensor& x, int layer, KvCache* cache, int64_t start_pos);
  torch::Tensor Mlp(const torch::Tensor& x, int layer);

  LlamaConfig config_;
  ModelOptions options_;
  torch::Tensor embed_tokens_;  // [V, D]
  std::vector<LayerWeights> layers_;
  torch::Tensor norm_;     // [D]
  torch::Tensor lm_head_;  // [V, D]; the same tensor as embed_tokens_ when tied
  torch::Tensor rope_cos_;  // [max_pos, hd], compute dtype
  torch::Tensor rope_sin_;  // [max_pos, hd]
  std::vector<LinearOverride> overrides_;  // by ComponentId::Index(); empty function = plain matmul
  InputObserver observer_;
  bool activation_checkpointing_ = false;
};

}  // namespace dtm
