// config.json: the JSON text, then ParseLlamaConfig (LoadLlamaConfig is ReadJsonFile, fuzzed with
// the JSON lines, plus this). An accepted config must survive its own ToJson() unchanged, since
// `dtmctl apply` writes configs that way and workers read them back.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <nlohmann/json.hpp>

#include "worker/engine/model_config.h"

namespace {

bool SameConfig(const dtm::LlamaConfig& a, const dtm::LlamaConfig& b) {
  return a.vocab_size == b.vocab_size && a.hidden_size == b.hidden_size &&
         a.intermediate_size == b.intermediate_size && a.num_hidden_layers == b.num_hidden_layers &&
         a.num_attention_heads == b.num_attention_heads && a.num_key_value_heads == b.num_key_value_heads &&
         a.max_position_embeddings == b.max_position_embeddings && a.rms_norm_eps == b.rms_norm_eps &&
         a.rope_theta == b.rope_theta && a.tie_word_embeddings == b.tie_word_embeddings &&
         a.bos_token_id == b.bos_token_id && a.eos_token_id == b.eos_token_id && a.torch_dtype == b.torch_dtype;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const nlohmann::json j = nlohmann::json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  dtm::StatusOr<dtm::LlamaConfig> config = dtm::ParseLlamaConfig(j, "config.json");
  if (!config.ok()) {
    // Messages are one line (they end up in logs and gRPC status details).
    if (config.status().message().find('\n') != std::string::npos) std::abort();
    return 0;
  }
  // Invariants the forward pass relies on.
  const dtm::LlamaConfig& c = *config;
  if (c.hidden_size % c.num_attention_heads != 0 || c.num_attention_heads % c.num_key_value_heads != 0 ||
      c.head_dim() % 2 != 0 || c.vocab_size <= 0 || c.num_hidden_layers <= 0) {
    std::abort();
  }
  dtm::StatusOr<dtm::LlamaConfig> again = dtm::ParseLlamaConfig(c.ToJson(), "round trip");
  if (!again.ok() || !SameConfig(c, *again)) std::abort();
  return 0;
}
