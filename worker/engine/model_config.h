// Llama hyperparameters, as Hugging Face's config.json holds them.
//
// Only what the HF LlamaForCausalLM math of SPEC.md needs is accepted: variants that change the
// math (RoPE scaling, biases, other activations, a head_dim other than hidden/heads) are refused
// with UNIMPLEMENTED rather than silently computed wrong. Other errors: NOT_FOUND for a missing
// file, DATA_LOSS for a file that is not JSON, INVALID_ARGUMENT for missing or bad values.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace dtm {

struct LlamaConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;        // D
  int64_t intermediate_size = 0;  // I, the SwiGLU hidden width
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;  // H
  int64_t num_key_value_heads = 0;  // KVH; < H for grouped-query attention
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;  // -1 when config.json says null
  int64_t eos_token_id = 2;  // the first one when config.json lists several
  std::string torch_dtype = "float32";  // as stored in config.json (informational)

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  // A complete HF config.json for this model, loadable by transformers' LlamaForCausalLM.
  nlohmann::json ToJson() const;
};

// Reads and validates a parsed config.json; `source` (usually its path) starts every message.
// Absent optional fields take HF's defaults: num_key_value_heads = num_attention_heads,
// max_position_embeddings = 2048, rms_norm_eps = 1e-6, rope_theta = 10000, untied embeddings.
// Both RoPE spellings are read: rope_theta (+ rope_scaling null) and transformers 5's
// rope_parameters {"rope_type": "default", "rope_theta": ...}; a rope type other than "default"
// is UNIMPLEMENTED.
StatusOr<LlamaConfig> ParseLlamaConfig(const nlohmann::json& j, const std::string& source);
StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& path);

}  // namespace dtm
