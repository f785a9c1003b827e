#include "worker/engine/model_config.h"

#include <cmath>

#include "common/jsonl.h"
#include "common/user_text.h"

namespace dtm {
namespace {

using Json = nlohmann::json;

// A JSON value shown in a message, cut short: config values can be large objects.
std::string Show(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 120) text = text.substr(0, 117) + "...";
  return text;
}

// Reads the fields of one config object; every message starts with `source`.
class FieldReader {
 public:
  FieldReader(const Json& j, const std::string& source) : j_(j), source_(source) {}

  Status Error(StatusCode code, const std::string& what) const { return {code, OneLine(source_ + ": " + what)}; }
  Status Invalid(const std::string& what) const { return Error(StatusCode::kInvalidArgument, what); }
  Status Unsupported(const std::string& what) const { return Error(StatusCode::kUnimplemented, what); }

  // The field, or nullptr when absent or null (HF treats both as "use the default").
  const Json* Get(const char* key) const {
    auto it = j_.find(key);
    return (it == j_.end() || it->is_null()) ? nullptr : &*it;
  }

  Status PositiveInt(const char* key, bool required, int64_t* out) const {
    const Json* v = Get(key);
    if (v == nullptr) return required ? Invalid("required field '" + std::string(key) + "' is missing") : OkStatus();
    bool fits = v->is_number_integer() && (!v->is_number_unsigned() || v->get<uint64_t>() <= INT64_MAX);
    if (!fits || v->get<int64_t>() <= 0) {
      return Invalid("field '" + std::string(key) + "' must be a positive integer, got " + Show(*v));
    }
    *out = v->get<int64_t>();
    return OkStatus();
  }

  Status PositiveNumber(const char* key, double* out) const {
    const Json* v = Get(key);
    if (v == nullptr) return OkStatus();
    if (!v->is_number() || !(v->get<double>() > 0) || !std::isfinite(v->get<double>())) {
      return Invalid("field '" + std::string(key) + "' must be a positive number, got " + Show(*v));
    }
    *out = v->get<double>();
    return OkStatus();
  }

  Status Bool(const char* key, bool* out) const {
    const Json* v = Get(key);
    if (v == nullptr) return OkStatus();
    if (!v->is_boolean()) return Invalid("field '" + std::string(key) + "' must be true or false, got " + Show(*v));
    *out = v->get<bool>();
    return OkStatus();
  }

  // A token id: an integer, null (none: -1) or, as Llama-3 configs have it for eos, a list of
  // which the first is taken.
  Status TokenId(const char* key, int64_t* out) const {
    auto it = j_.find(key);
    if (it == j_.end()) return OkStatus();
    const Json* v = &*it;
    if (v->is_array()) {
      if (v->empty()) {
        *out = -1;
        return OkStatus();
      }
      v = &(*v)[0];
    }
    if (v->is_null()) {
      *out = -1;
      return OkStatus();
    }
    bool fits = v->is_number_integer() && (!v->is_number_unsigned() || v->get<uint64_t>() <= INT64_MAX);
    if (!fits || v->get<int64_t>() < 0) {
      return Invalid("field '" + std::string(key) + "' must be a token id, got " + Show(*it));
    }
    *out = v->get<int64_t>();
    return OkStatus();
  }

  Status String(const char* key, std::string* out) const {
    const Json* v = Get(key);
    if (v == nullptr) return OkStatus();
    if (!v->is_string()) return Invalid("field '" + std::string(key) + "' must be a string, got " + Show(*v));
    *out = v->get<std::string>();
    return OkStatus();
  }

  const std::string& source() const { return source_; }

 private:
  const Json& j_;
  const std::string& source_;
};

// RoPE settings: transformers < 5 writes rope_theta and rope_scaling (null when plain), transformers
// >= 5 writes rope_parameters {"rope_type": "default", "rope_theta": ...}. Either may be a dict of
// rope_type "default", which is plain RoPE; any other type scales the frequencies and is refused.
Status ReadRope(const FieldReader& f, LlamaConfig* c) {
  RETURN_IF_ERROR(f.PositiveNumber("rope_theta", &c->rope_theta));
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const Json* rope = f.Get(key);
    if (rope == nullptr) continue;
    const Json* type = nullptr;
    if (rope->is_object()) {
      if (rope->contains("rope_type")) type = &(*rope)["rope_type"];
      else if (rope->contains("type")) type = &(*rope)["type"];
    }
    if (type == nullptr || *type != "default") {
      return f.Unsupported(std::string(key) + " " + Show(*rope) + " is not supported (only plain RoPE)");
    }
    if (rope->contains("rope_theta")) {
      FieldReader inner(*rope, f.source());
      RETURN_IF_ERROR(inner.PositiveNumber("rope_theta", &c->rope_theta));
    }
  }
  return OkStatus();
}

// Fields that would change the math of SPEC.md's LlamaForCausalLM.
Status CheckSupportedVariant(const FieldReader& f, const LlamaConfig& c) {
  std::string model_type = "llama";
  RETURN_IF_ERROR(f.String("model_type", &model_type));
  if (model_type != "llama") return f.Invalid("model_type '" + model_type + "' is not a Llama model");
  std::string hidden_act = "silu";
  RETURN_IF_ERROR(f.String("hidden_act", &hidden_act));
  if (hidden_act != "silu") return f.Unsupported("hidden_act '" + hidden_act + "' is not supported (only silu)");
  for (const char* bias : {"attention_bias", "mlp_bias"}) {
    bool has_bias = false;
    RETURN_IF_ERROR(f.Bool(bias, &has_bias));
    if (has_bias) return f.Unsupported(std::string(bias) + " true is not supported (Llama has no biases)");
  }
  int64_t head_dim = c.head_dim();
  RETURN_IF_ERROR(f.PositiveInt("head_dim", /*required=*/false, &head_dim));
  if (head_dim != c.head_dim()) {
    return f.Unsupported("head_dim " + std::to_string(head_dim) + " differs from hidden_size / num_attention_heads = " +
                         std::to_string(c.head_dim()) + ", which is not supported");
  }
  return OkStatus();
}

}  // namespace

Json LlamaConfig::ToJson() const {
  return Json{
      {"architectures", {"LlamaForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", bos_token_id < 0 ? Json(nullptr) : Json(bos_token_id)},
      {"eos_token_id", eos_token_id < 0 ? Json(nullptr) : Json(eos_token_id)},
      {"head_dim", head_dim()},
      {"hidden_act", "silu"},
      {"hidden_size", hidden_size},
      {"initializer_range", 0.02},
      {"intermediate_size", intermediate_size},
      {"max_position_embeddings", max_position_embeddings},
      {"mlp_bias", false},
      {"model_type", "llama"},
      {"num_attention_heads", num_attention_heads},
      {"num_hidden_layers", num_hidden_layers},
      {"num_key_value_heads", num_key_value_heads},
      {"pretraining_tp", 1},
      {"rms_norm_eps", rms_norm_eps},
      {"rope_scaling", nullptr},
      {"rope_theta", rope_theta},
      {"tie_word_embeddings", tie_word_embeddings},
      {"torch_dtype", torch_dtype},
      {"use_cache", true},
      {"vocab_size", vocab_size},
  };
}

StatusOr<LlamaConfig> ParseLlamaConfig(const Json& j, const std::string& source) {
  if (!j.is_object()) return InvalidArgumentError(OneLine(source + ": config is not a JSON object"));
  if (JsonNestedDeeperThan(j, kMaxJsonNesting)) {
    return InvalidArgumentError(
        OneLine(source + ": config nests deeper than " + std::to_string(kMaxJsonNesting) + " levels"));
  }
  FieldReader f(j, source);
  LlamaConfig c;
  c.max_position_embeddings = 2048;  // transformers' LlamaConfig default
  RETURN_IF_ERROR(f.PositiveInt("vocab_size", true, &c.vocab_size));
  RETURN_IF_ERROR(f.PositiveInt("hidden_size", true, &c.hidden_size));
  RETURN_IF_ERROR(f.PositiveInt("intermediate_size", true, &c.intermediate_size));
  RETURN_IF_ERROR(f.PositiveInt("num_hidden_layers", true, &c.num_hidden_layers));
  RETURN_IF_ERROR(f.PositiveInt("num_attention_heads", true, &c.num_attention_heads));
  c.num_key_value_heads = c.num_attention_heads;
  RETURN_IF_ERROR(f.PositiveInt("num_key_value_heads", false, &c.num_key_value_heads));
  RETURN_IF_ERROR(f.PositiveInt("max_position_embeddings", false, &c.max_position_embeddings));
  RETURN_IF_ERROR(f.PositiveNumber("rms_norm_eps", &c.rms_norm_eps));
  RETURN_IF_ERROR(ReadRope(f, &c));
  RETURN_IF_ERROR(f.Bool("tie_word_embeddings", &c.tie_word_embeddings));
  RETURN_IF_ERROR(f.TokenId("bos_token_id", &c.bos_token_id));
  RETURN_IF_ERROR(f.TokenId("eos_token_id", &c.eos_token_id));
  // transformers >= 4.56 writes "dtype" where older versions wrote "torch_dtype".
  RETURN_IF_ERROR(f.String("dtype", &c.torch_dtype));
  RETURN_IF_ERROR(f.String("torch_dtype", &c.torch_dtype));

  if (c.hidden_size % c.num_attention_heads != 0) {
    return f.Invalid("hidden_size " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
                     std::to_string(c.num_attention_heads));
  }
  if (c.num_attention_heads % c.num_key_value_heads != 0) {
    return f.Invalid("num_attention_heads " + std::to_string(c.num_attention_heads) +
                     " is not a multiple of num_key_value_heads " + std::to_string(c.num_key_value_heads));
  }
  if (c.head_dim() % 2 != 0) {
    return f.Invalid("head dimension " + std::to_string(c.head_dim()) + " is odd; rotary embeddings need it even");
  }
  RETURN_IF_ERROR(CheckSupportedVariant(f, c));
  return c;
}

StatusOr<LlamaConfig> LoadLlamaConfig(const std::string& path) {
  ASSIGN_OR_RETURN(Json j, ReadJsonFile(path));
  return ParseLlamaConfig(j, path);
}

}  // namespace dtm
