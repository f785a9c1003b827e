#include "worker/engine/training_memory.h"

namespace dtm {

int64_t LlamaParameterCount(const LlamaConfig& c) {
  const int64_t d = c.hidden_size;
  const int64_t kv = c.num_key_value_heads * c.head_dim();
  const int64_t per_layer = d * d * 2 + d * kv * 2 + 3 * d * c.intermediate_size + 2 * d;  // q o, k v, MLP, norms
  const int64_t embeddings = c.vocab_size * d;
  return embeddings + c.num_hidden_layers * per_layer + d + (c.tie_word_embeddings ? 0 : embeddings);
}

TrainingMemoryPlan PlanTrainingMemory(const LlamaConfig& c, const TrainingMemoryOptions& o) {
  TrainingMemoryPlan plan;
  plan.parameters = LlamaParameterCount(c);
  const double p = static_cast<double>(plan.parameters);
  plan.master_weights = 4 * p;
  plan.compute_weights = o.half_compute ? 2 * p : 0;
  plan.gradients = (o.half_compute && o.half_gradients ? 2 : 4) * p;
  plan.optimizer = 8 * p / static_cast<double>(o.shard_optimizer ? o.members : 1);
  const double s = static_cast<double>(o.seq_len), b = static_cast<double>(o.micro_batch);
  const double h = static_cast<double>(c.hidden_size), a = static_cast<double>(c.num_attention_heads);
  const double layers = static_cast<double>(c.num_hidden_layers);
  const double one_layer = s * b * h * (34 + 5 * a * s / h);
  plan.activations = o.checkpoint_activations ? layers * 2 * s * b * h + one_layer : layers * one_layer;
  plan.logits = s * b * static_cast<double>(c.vocab_size) * 8;
  return plan;
}

namespace {

LlamaConfig Llama2(int64_t hidden, int64_t intermediate, int64_t layers, int64_t heads) {
  LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = hidden;
  c.intermediate_size = intermediate;
  c.num_hidden_layers = layers;
  c.num_attention_heads = heads;
  c.num_key_value_heads = heads;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  return c;
}

}  // namespace

LlamaConfig Llama2_7bConfig() { return Llama2(4096, 11008, 32, 32); }
LlamaConfig Llama2_13bConfig() { return Llama2(5120, 13824, 40, 40); }

}  // namespace dtm
