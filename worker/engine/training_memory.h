// The memory a recovery-training member needs on its device, by part, before it runs: what decides
// how many GPUs a model needs and which state must be sharded (SPEC "Recovery training"; the
// paper's 13B run). Arithmetic only, from the model's config; bench/train_memory_plan prints it for
// Llama-2-7B and 13B.
//
// Parts, for P parameters and W members:
//   master weights   4P  (float32, every member a replica)
//   compute weights  2P  when the compute dtype is bf16/fp16 (a second copy the forward reads), else 0
//   gradients        4P  float32 (or 2P when kept in the compute dtype)
//   AdamW moments    8P, or 8P / W when sharded across the gang (ZeRO-1)
//   activations      of one micro-batch of b sequences of s tokens, after Korthikanti et al. (2022,
//                    "Reducing Activation Recomputation in Large Transformer Models", Eq. 2, 16-bit
//                    activations, no sequence parallelism): s b h (34 + 5 a s / h) bytes per layer; with
//                    activation checkpointing per decoder layer, each layer's 16-bit input (2 s b h) plus one
//                    layer's whole set during its recomputation. Llama's SwiGLU MLP differs from the GPT
//                    block the formula counts, so this part is an estimate.
//   logits           s b V x (4 + 4) bytes: float32 logits and their gradient
// Allocator fragmentation, the CUDA context (about 0.5-1 GB) and communication buffers (one bucket)
// come on top.
#pragma once

#include <cstdint>

#include "worker/engine/model_config.h"

namespace dtm {

struct TrainingMemoryOptions {
  int64_t members = 1;           // W
  int64_t micro_batch = 1;       // b
  int64_t seq_len = 2048;        // s
  bool half_compute = true;      // bf16 compute with float32 master weights (the GPU default)
  bool half_gradients = false;   // gradients kept in the compute dtype
  bool shard_optimizer = true;   // ZeRO-1
  bool checkpoint_activations = true;
};

struct TrainingMemoryPlan {
  int64_t parameters = 0;
  double master_weights = 0;  // bytes, each
  double compute_weights = 0;
  double gradients = 0;
  double optimizer = 0;
  double activations = 0;
  double logits = 0;
  double total() const { return master_weights + compute_weights + gradients + optimizer + activations + logits; }
};

// The parameter count of a Llama with this config: embeddings, per layer q k v o gate up down and two
// norms, the final norm, and lm_head unless tied.
int64_t LlamaParameterCount(const LlamaConfig& config);

TrainingMemoryPlan PlanTrainingMemory(const LlamaConfig& config, const TrainingMemoryOptions& options);

// The configs of the paper's models (Hugging Face's meta-llama/Llama-2-7b-hf and -13b-hf).
LlamaConfig Llama2_7bConfig();
LlamaConfig Llama2_13bConfig();

}  // namespace dtm
