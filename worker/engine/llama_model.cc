#include "worker/engine/llama_model.h"

#include <cmath>
#include <limits>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/version.h>

#include "worker/engine/checkpoint.h"

namespace dtm {
namespace {

std::string LayerPrefix(int layer) { return "model.layers." + std::to_string(layer) + "."; }

// rotate_half of HF: [x1, x2] -> [-x2, x1] over the last dimension.
torch::Tensor RotateHalf(const torch::Tensor& x) {
  int64_t half = x.size(-1) / 2;
  return torch::cat({-x.slice(-1, half), x.slice(-1, 0, half)}, -1);
}

// HF repeat_kv: kv head j serves query heads [j * n_rep, (j + 1) * n_rep).
torch::Tensor RepeatKv(const torch::Tensor& x, int64_t n_rep) {
  if (n_rep == 1) return x;
  return x.repeat_interleave(n_rep, /*dim=*/1);
}

// Causal softmax(q k^T / sqrt(hd)) v for q [B, H, T, hd], k/v [B, H, S, hd] with the queries at
// positions [start_pos, start_pos + T); the softmax in float32 as HF's eager attention does.
torch::Tensor EagerAttention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, int64_t start_pos) {
  const int64_t t = q.size(2), s = k.size(2);
  torch::Tensor scores = torch::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(static_cast<double>(q.size(-1))));
  if (t > 1) {
    // Query i sits at position start_pos + i and sees keys j <= start_pos + i.
    torch::Tensor future =
        torch::ones({t, s}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(start_pos + 1);
    scores = scores.masked_fill(future, -std::numeric_limits<float>::infinity());
  }
  torch::Tensor probs = torch::softmax(scores.to(torch::kFloat32), -1).to(q.scalar_type());
  return torch::matmul(probs, v);  // [B, H, T, hd]
}

}  // namespace

torch::Tensor& LayerWeights::Component(ComponentKind kind) {
  switch (kind) {
    case ComponentKind::kQ: return q_proj;
    case ComponentKind::kK: return k_proj;
    case ComponentKind::kV: return v_proj;
    case ComponentKind::kO: return o_proj;
    case ComponentKind::kGate: return gate_proj;
    case ComponentKind::kUp: return up_proj;
    case ComponentKind::kDown: return down_proj;
  }
  return q_proj;
}

LlamaModel::LlamaModel(LlamaConfig config, ModelOptions options)
    : config_(std::move(config)), options_(options) {
  layers_.resize(config_.num_hidden_layers);
  overrides_.resize(static_cast<size_t>(config_.num_hidden_layers) * kComponentKindsPerLayer);
  BuildRope();
}

StatusOr<std::unique_ptr<LlamaModel>> LlamaModel::Load(const Checkpoint& checkpoint, const ModelOptions& options) {
  std::unique_ptr<LlamaModel> model(new LlamaModel(checkpoint.config(), options));
  auto load = [&](const std::string& name, const std::vector<int64_t>& shape) {
    return checkpoint.Load(name, shape, options.dtype, options.device);
  };
  const LlamaConfig& c = model->config_;
  const int64_t d = c.hidden_size, hd = c.head_dim();
  ASSIGN_OR_RETURN(model->embed_tokens_, load("model.embed_tokens.weight", {c.vocab_size, d}));
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& w = model->layers_[l];
    const std::string p = LayerPrefix(l);
    ASSIGN_OR_RETURN(w.input_layernorm, load(p + "input_layernorm.weight", {d}));
    ASSIGN_OR_RETURN(w.q_proj, load(p + "self_attn.q_proj.weight", {c.num_attention_heads * hd, d}));
    ASSIGN_OR_RETURN(w.k_proj, load(p + "self_attn.k_proj.weight", {c.num_key_value_heads * hd, d}));
    ASSIGN_OR_RETURN(w.v_proj, load(p + "self_attn.v_proj.weight", {c.num_key_value_heads * hd, d}));
    ASSIGN_OR_RETURN(w.o_proj, load(p + "self_attn.o_proj.weight", {d, c.num_attention_heads * hd}));
    ASSIGN_OR_RETURN(w.post_attention_layernorm, load(p + "post_attention_layernorm.weight", {d}));
    ASSIGN_OR_RETURN(w.gate_proj, load(p + "mlp.gate_proj.weight", {c.intermediate_size, d}));
    ASSIGN_OR_RETURN(w.up_proj, load(p + "mlp.up_proj.weight", {c.intermediate_size, d}));
    ASSIGN_OR_RETURN(w.down_proj, load(p + "mlp.down_proj.weight", {d, c.intermediate_size}));
  }
  ASSIGN_OR_RETURN(model->norm_, load("model.norm.weight", {d}));
  if (c.tie_word_embeddings) {
    model->lm_head_ = model->embed_tokens_;
  } else {
    ASSIGN_OR_RETURN(model->lm_head_, load("lm_head.weight", {c.vocab_size, d}));
  }
  return model;
}

std::unique_ptr<LlamaModel> LlamaModel::RandomInit(const LlamaConfig& config, const ModelOptions& options,
                                                   uint64_t seed) {
  std::unique_ptr<LlamaModel> model(new LlamaModel(config, options));
  // On CPU from a seeded CPU generator (the tiny model's training is deterministic); on a GPU
  // drawn there, as a 7B-sized model would take minutes to draw on the host.
  auto gen = at::detail::createCPUGenerator(seed);
  if (!options.device.is_cpu()) torch::manual_seed(seed);
  auto normal = [&](std::vector<int64_t> shape) {
    if (!options.device.is_cpu()) {
      return (torch::randn(shape, torch::TensorOptions().dtype(torch::kFloat32).device(options.device)) * 0.02)
          .to(options.dtype);
    }
    return at::normal(0.0, 0.02, shape, gen, torch::TensorOptions().dtype(torch::kFloat32)).to(options.dtype);
  };
  auto ones = [&](int64_t n) { return torch::ones({n}, torch::TensorOptions().dtype(options.dtype).device(options.device)); };
  const int64_t d = config.hidden_size, hd = config.head_dim();
  model->embed_tokens_ = normal({config.vocab_size, d});
  for (LayerWeights& w : model->layers_) {
    w.input_layernorm = ones(d);
    w.q_proj = normal({config.num_attention_heads * hd, d});
    w.k_proj = normal({config.num_key_value_heads * hd, d});
    w.v_proj = normal({config.num_key_value_heads * hd, d});
    w.o_proj = normal({d, config.num_attention_heads * hd});
    w.post_attention_layernorm = ones(d);
    w.gate_proj = normal({config.intermediate_size, d});
    w.up_proj = normal({config.intermediate_size, d});
    w.down_proj = normal({d, config.intermediate_size});
  }
  model->norm_ = ones(d);
  model->lm_head_ = config.tie_word_embeddings ? model->embed_tokens_ : normal({config.vocab_size, d});
  return model;
}

// cos/sin tables as HF computes them: inv_freq = theta^(-2i/hd), angles in float32, then the
// compute dtype.
void LlamaModel::BuildRope() {
  const int64_t hd = config_.head_dim();
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  torch::Tensor exponents = torch::arange(0, hd, 2, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32) / hd;
  torch::Tensor inv_freq = 1.0 / torch::pow(torch::tensor(config_.rope_theta, f32), exponents);  // [hd/2]
  torch::Tensor positions = torch::arange(config_.max_position_embeddings, torch::TensorOptions().dtype(torch::kInt64)).to(torch::kFloat32);
  torch::Tensor freqs = torch::outer(positions, inv_freq);  // [max_pos, hd/2]
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);       // [max_pos, hd]
  rope_cos_ = emb.cos().to(options_.device, options_.dtype);
  rope_sin_ = emb.sin().to(options_.device, options_.dtype);
}

torch::Tensor& LlamaModel::ComponentWeight(const ComponentId& id) { return layers_.at(id.layer).Component(id.kind); }

void LlamaModel::SetLinearOverride(const ComponentId& id, LinearOverride override_fn) {
  overrides_.at(id.Index()) = std::move(override_fn);
}

void LlamaModel::ClearLinearOverride(const ComponentId& id) { overrides_.at(id.Index()) = nullptr; }

std::vector<std::pair<std::string, torch::Tensor>> LlamaModel::NamedWeights() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", embed_tokens_);
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    const LayerWeights& w = layers_[l];
    const std::string p = LayerPrefix(l);
    out.emplace_back(p + "input_layernorm.weight", w.input_layernorm);
    out.emplace_back(p + "self_attn.q_proj.weight", w.q_proj);
    out.emplace_back(p + "self_attn.k_proj.weight", w.k_proj);
    out.emplace_back(p + "self_attn.v_proj.weight", w.v_proj);
    out.emplace_back(p + "self_attn.o_proj.weight", w.o_proj);
    out.emplace_back(p + "post_attention_layernorm.weight", w.post_attention_layernorm);
    out.emplace_back(p + "mlp.gate_proj.weight", w.gate_proj);
    out.emplace_back(p + "mlp.up_proj.weight", w.up_proj);
    out.emplace_back(p + "mlp.down_proj.weight", w.down_proj);
  }
  out.emplace_back("model.norm.weight", norm_);
  if (!config_.tie_word_embeddings) out.emplace_back("lm_head.weight", lm_head_);
  return out;
}

std::vector<torch::Tensor> LlamaModel::Parameters() const {
  std::vector<torch::Tensor> params;
  for (auto& [name, tensor] : NamedWeights()) params.push_back(tensor);
  return params;
}

void LlamaModel::Observe(int layer, LinearInputSite site, const torch::Tensor& x) const {
  if (observer_) observer_(layer, site, x);
}

torch::Tensor LlamaModel::Linear(const torch::Tensor& x, int layer, ComponentKind kind) {
  const torch::Tensor& w = layers_[layer].Component(kind);
  const LinearOverride& override_fn = overrides_[layer * kComponentKindsPerLayer + static_cast<int>(kind)];
  if (override_fn) return override_fn(x, w);
  return torch::matmul(x, w.t());
}

// HF LlamaRMSNorm: normalise in float32, cast back, then scale.
torch::Tensor LlamaModel::RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) const {
  torch::Tensor h = x.to(torch::kFloat32);
  torch::Tensor variance = h.pow(2).mean(-1, /*keepdim=*/true);
  h = h * torch::rsqrt(variance + config_.rms_norm_eps);
  return weight * h.to(x.scalar_type());
}

// x: [B, heads, T, hd] at positions [start_pos, start_pos + T).
torch::Tensor LlamaModel::ApplyRope(const torch::Tensor& x, int64_t start_pos) const {
  const int64_t t = x.size(2);
  torch::Tensor cos = rope_cos_.slice(0, start_pos, start_pos + t);  // [T, hd]
  torch::Tensor sin = rope_sin_.slice(0, start_pos, start_pos + t);
  return x * cos + RotateHalf(x) * sin;
}

torch::Tensor LlamaModel::Attention(const torch::Tensor& x, int layer, KvCache* cache, int64_t start_pos) {
  const int64_t b = x.size(0), t = x.size(1);
  const int64_t h = config_.num_attention_heads, kvh = config_.num_key_value_heads, hd = config_.head_dim();

  // qkv matmuls: [B, T, D] -> [B, heads, T, hd]
  Observe(layer, LinearInputSite::kAttentionIn, x);
  torch::Tensor q = Linear(x, layer, ComponentKind::kQ).view({b, t, h, hd}).transpose(1, 2);
  torch::Tensor k = Linear(x, layer, ComponentKind::kK).view({b, t, kvh, hd}).transpose(1, 2);
  torch::Tensor v = Linear(x, layer, ComponentKind::kV).view({b, t, kvh, hd}).transpose(1, 2);

  // RoPE on queries and keys at their absolute positions.
  q = ApplyRope(q, start_pos);
  k = ApplyRope(k, start_pos);

  // The cache holds every earlier key/value; attend over [0, start_pos + T).
  if (cache != nullptr) {
    cache->keys[layer].slice(2, start_pos, start_pos + t).copy_(k);
    cache->values[layer].slice(2, start_pos, start_pos + t).copy_(v);
    k = cache->keys[layer].slice(2, 0, start_pos + t);
    v = cache->values[layer].slice(2, 0, start_pos + t);
  }
  k = RepeatKv(k, h / kvh);  // [B, H, S, hd]
  v = RepeatKv(v, h / kvh);

  torch::Tensor out;
#if TORCH_VERSION_MAJOR >= 2
  // On GPUs the fused kernel (flash / memory-efficient); its causal mask is aligned to the start,
  // which holds for a prefill (start_pos 0) and is not needed for one new token.
  if (x.is_cuda() && (start_pos == 0 || t == 1)) {
    out = at::scaled_dot_product_attention(q, k, v, {}, 0.0, /*is_causal=*/t > 1);
  } else {
    out = EagerAttention(q, k, v, start_pos);
  }
#else
  out = EagerAttention(q, k, v, start_pos);
#endif
  out = out.transpose(1, 2).reshape({b, t, h * hd});

  Observe(layer, LinearInputSite::kAttentionOut, out);
  return Linear(out, layer, ComponentKind::kO);
}

// SwiGLU: down(silu(gate(x)) * up(x)).
torch::Tensor LlamaModel::Mlp(const torch::Tensor& x, int layer) {
  Observe(layer, LinearInputSite::kMlpIn, x);
  torch::Tensor hidden = torch::silu(Linear(x, layer, ComponentKind::kGate)) * Linear(x, layer, ComponentKind::kUp);
  Observe(layer, LinearInputSite::kMlpHidden, hidden);
  return Linear(hidden, layer, ComponentKind::kDown);
}

namespace {

// A decoder layer whose forward keeps only its input (run without autograd) and whose backward runs
// it again with autograd and back-propagates through that: the re-entrant checkpoint of PyTorch's
// torch.utils.checkpoint. The layer's weights get their gradients from the inner backward. The
// model travels as an integer (an autograd context holds IValues, not pointers); it outlives the
// graph, which a training step builds and consumes.
struct LayerCheckpoint : public torch::autograd::Function<LayerCheckpoint> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t model,
                               int64_t layer) {
    ctx->save_for_backward({x});
    ctx->saved_data["model"] = model;
    ctx->saved_data["layer"] = layer;
    return reinterpret_cast<LlamaModel*>(static_cast<uintptr_t>(model))->DecoderLayer(x, static_cast<int>(layer));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    auto* model = reinterpret_cast<LlamaModel*>(static_cast<uintptr_t>(ctx->saved_data["model"].toInt()));
    torch::Tensor y;
    {
      torch::AutoGradMode grad(true);
      y = model->DecoderLayer(x, static_cast<int>(ctx->saved_data["layer"].toInt()));
    }
    torch::autograd::backward({y}, {grad_out[0]});
    return {x.grad(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor LlamaModel::RunLayers(const torch::Tensor& tokens, int num_layers, KvCache* cache, int64_t start_pos) {
  TORCH_CHECK(tokens.dim() == 2, "tokens must be [B, T]");
  TORCH_CHECK(start_pos + tokens.size(1) <= config_.max_position_embeddings,
              "sequence of ", start_pos + tokens.size(1), " tokens exceeds max_position_embeddings ",
              config_.max_position_embeddings);
  TORCH_CHECK(num_layers >= 0 && num_layers <= config_.num_hidden_layers, "num_layers ", num_layers,
              " is outside [0, ", config_.num_hidden_layers, "]");
  torch::Tensor x = Embed(tokens);  // [B, T, D]
  const bool checkpoint = activation_checkpointing_ && cache == nullptr && start_pos == 0 && torch::GradMode::is_enabled();
  for (int l = 0; l < num_layers; ++l) {
    if (checkpoint) {
      x = LayerCheckpoint::apply(x, static_cast<int64_t>(reinterpret_cast<uintptr_t>(this)), static_cast<int64_t>(l));
      continue;
    }
    const LayerWeights& w = layers_[l];
    x = x + Attention(RmsNorm(x, w.input_layernorm), l, cache, start_pos);
    x = x + Mlp(RmsNorm(x, w.post_attention_layernorm), l);
  }
  return x;
}

torch::Tensor LlamaModel::Embed(const torch::Tensor& tokens) const {
  return torch::embedding(embed_tokens_, tokens.to(options_.device));
}

torch::Tensor LlamaModel::RunLayersFrom(torch::Tensor x, int first_layer,
                                        const std::function<void(int layer, const torch::Tensor& x)>& on_layer_input) {
  TORCH_CHECK(x.dim() == 3, "the residual stream must be [B, T, D]");
  TORCH_CHECK(x.size(1) <= config_.max_position_embeddings, "sequence of ", x.size(1),
              " tokens exceeds max_position_embeddings ", config_.max_position_embeddings);
  TORCH_CHECK(first_layer >= 0 && first_layer <= config_.num_hidden_layers, "first_layer ", first_layer,
              " is outside [0, ", config_.num_hidden_layers, "]");
  // The same expressions as RunLayers without a cache, so that a stream resumed here ends bit-equal.
  for (int l = first_layer; l < config_.num_hidden_layers; ++l) {
    const LayerWeights& w = layers_[l];
    x = x + Attention(RmsNorm(x, w.input_layernorm), l, nullptr, 0);
    x = x + Mlp(RmsNorm(x, w.post_attention_layernorm), l);
    if (on_layer_input) on_layer_input(l + 1, x);
  }
  return x;
}

torch::Tensor LlamaModel::DecoderLayer(const torch::Tensor& x, int layer) {
  const LayerWeights& w = layers_[layer];
  torch::Tensor h = x + Attention(RmsNorm(x, w.input_layernorm), layer, nullptr, 0);
  return h + Mlp(RmsNorm(h, w.post_attention_layernorm), layer);
}

torch::Tensor LlamaModel::Forward(const torch::Tensor& tokens, KvCache* cache, int64_t start_pos) {
  torch::Tensor x = RunLayers(tokens, config_.num_hidden_layers, cache, start_pos);
  if (cache != nullptr) cache->length = start_pos + tokens.size(1);
  return RmsNorm(x, norm_);
}

torch::Tensor LlamaModel::ForwardLayers(const torch::Tensor& tokens, int num_layers) {
  return RunLayers(tokens, num_layers, nullptr, 0);
}

torch::Tensor LlamaModel::Logits(const torch::Tensor& hidden) const { return torch::matmul(hidden, lm_head_.t()); }

KvCache LlamaModel::NewCache(int64_t batch, int64_t capacity) const {
  KvCache cache;
  auto opts = torch::TensorOptions().dtype(options_.dtype).device(options_.device);
  for (int l = 0; l < config_.num_hidden_layers; ++l) {
    cache.keys.push_back(torch::empty({batch, config_.num_key_value_heads, capacity, config_.head_dim()}, opts));
    cache.values.push_back(torch::empty({batch, config_.num_key_value_heads, capacity, config_.head_dim()}, opts));
  }
  return cache;
}

torch::Tensor LlamaModel::GenerateGreedy(const torch::Tensor& prefix, int64_t steps) {
  torch::NoGradGuard no_grad;
  const int64_t b = prefix.size(0), n = prefix.size(1);
  torch::Tensor out = torch::empty({b, n + steps}, torch::TensorOptions().dtype(torch::kInt64).device(options_.device));
  out.slice(1, 0, n).copy_(prefix);
  if (steps == 0) return out;
  KvCache cache = NewCache(b, n + steps);
  // Prefill the prefix, then one token at a time; argmax over float32 logits, ties to the lowest id.
  torch::Tensor hidden = Forward(out.slice(1, 0, n), &cache, 0);
  for (int64_t i = 0; i < steps; ++i) {
    torch::Tensor next = Logits(hidden.select(1, hidden.size(1) - 1)).to(torch::kFloat32).argmax(-1);  // [B]
    out.select(1, n + i).copy_(next);
    if (i + 1 < steps) hidden = Forward(out.slice(1, n + i, n + i + 1), &cache, n + i);
  }
  return out;
}

}  // namespace dtm
