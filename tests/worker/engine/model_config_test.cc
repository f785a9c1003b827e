#include "worker/engine/model_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace dtm {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

// Llama-2-7B's config.json as Hugging Face ships it.
Json Llama2Config() {
  return Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
    "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 11008, "max_position_embeddings": 4096,
    "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 32,
    "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_scaling": null, "tie_word_embeddings": false,
    "torch_dtype": "float16", "transformers_version": "4.31.0.dev0", "use_cache": true, "vocab_size": 32000})");
}

void ExpectError(const StatusOr<LlamaConfig>& parsed, StatusCode code, const std::string& needle) {
  ASSERT_FALSE(parsed.ok()) << needle;
  EXPECT_EQ(parsed.status().code(), code) << parsed.status().ToString();
  EXPECT_EQ(parsed.status().message().rfind("cfg.json: ", 0), 0u) << parsed.status().message();
  EXPECT_NE(parsed.status().message().find(needle), std::string::npos) << parsed.status().message();
  EXPECT_EQ(parsed.status().message().find('\n'), std::string::npos) << parsed.status().message();
}

// Llama-2-7B's config with `key` set to `value` (or removed when value is the string "<absent>").
Json With(const std::string& key, const Json& value) {
  Json j = Llama2Config();
  if (value == "<absent>") {
    j.erase(key);
  } else {
    j[key] = value;
  }
  return j;
}

TEST(LlamaConfigTest, ParsesLlama2Config) {
  StatusOr<LlamaConfig> c = ParseLlamaConfig(Llama2Config(), "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->vocab_size, 32000);
  EXPECT_EQ(c->hidden_size, 4096);
  EXPECT_EQ(c->intermediate_size, 11008);
  EXPECT_EQ(c->num_hidden_layers, 32);
  EXPECT_EQ(c->num_attention_heads, 32);
  EXPECT_EQ(c->num_key_value_heads, 32);
  EXPECT_EQ(c->max_position_embeddings, 4096);
  EXPECT_EQ(c->head_dim(), 128);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c->rope_theta, 10000.0);
  EXPECT_FALSE(c->tie_word_embeddings);
  EXPECT_EQ(c->torch_dtype, "float16");
}

TEST(LlamaConfigTest, AppliesHfDefaultsForAbsentFields) {
  Json j = Llama2Config();
  for (const char* key : {"num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "tie_word_embeddings",
                          "model_type", "hidden_act", "rope_scaling", "torch_dtype"}) {
    j.erase(key);
  }
  StatusOr<LlamaConfig> c = ParseLlamaConfig(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_key_value_heads, 32);
  EXPECT_EQ(c->max_position_embeddings, 2048);
  EXPECT_DOUBLE_EQ(c->rms_norm_eps, 1e-6);
  EXPECT_FALSE(c->tie_word_embeddings);
}

TEST(LlamaConfigTest, ReadsGroupedQueryAttentionAndRopeTheta) {
  Json j = Llama2Config();
  j["num_key_value_heads"] = 8;
  j["rope_theta"] = 500000.0;
  j["eos_token_id"] = {128001, 128009};
  j["bos_token_id"] = nullptr;
  j["dtype"] = "bfloat16";
  j.erase("torch_dtype");
  StatusOr<LlamaConfig> c = ParseLlamaConfig(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->num_key_value_heads, 8);
  EXPECT_DOUBLE_EQ(c->rope_theta, 500000.0);
  EXPECT_EQ(c->eos_token_id, 128001);
  EXPECT_EQ(c->bos_token_id, -1);
  EXPECT_EQ(c->torch_dtype, "bfloat16");
}

TEST(LlamaConfigTest, ReadsTransformers5RopeParameters) {
  Json j = With("rope_parameters", {{"rope_type", "default"}, {"rope_theta", 250000.0}});
  j.erase("rope_theta");
  j.erase("rope_scaling");
  StatusOr<LlamaConfig> c = ParseLlamaConfig(j, "cfg.json");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_DOUBLE_EQ(c->rope_theta, 250000.0);
  // A "default" rope type is plain RoPE under either key.
  EXPECT_TRUE(ParseLlamaConfig(With("rope_scaling", {{"type", "default"}}), "cfg.json").ok());
  ExpectError(ParseLlamaConfig(With("rope_parameters", {{"rope_type", "yarn"}, {"factor", 4.0}}), "cfg.json"),
              StatusCode::kUnimplemented, "rope_parameters");
  ExpectError(ParseLlamaConfig(With("rope_parameters", {{"rope_type", "default"}, {"rope_theta", -1}}), "cfg.json"),
              StatusCode::kInvalidArgument, "rope_theta");
  ExpectError(ParseLlamaConfig(With("rope_scaling", 2.0), "cfg.json"), StatusCode::kUnimplemented, "rope_scaling");
}

TEST(LlamaConfigTest, RoundTripsThroughToJson) {
  LlamaConfig c = *ParseLlamaConfig(With("num_key_value_heads", 4), "cfg.json");
  c.tie_word_embeddings = true;
  c.rope_theta = 1e6;
  Json j = c.ToJson();
  EXPECT_EQ(j["architectures"], Json::array({"LlamaForCausalLM"}));
  EXPECT_EQ(j["model_type"], "llama");
  EXPECT_EQ(j["hidden_act"], "silu");
  EXPECT_TRUE(j["rope_scaling"].is_null());
  EXPECT_EQ(j["attention_bias"], false);
  EXPECT_EQ(j["mlp_bias"], false);
  StatusOr<LlamaConfig> back = ParseLlamaConfig(j, "cfg.json");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->ToJson(), j);
}

TEST(LlamaConfigTest, RejectsMissingOrNonPositiveRequiredFields) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"}) {
    ExpectError(ParseLlamaConfig(With(key, "<absent>"), "cfg.json"), StatusCode::kInvalidArgument, key);
    ExpectError(ParseLlamaConfig(With(key, 0), "cfg.json"), StatusCode::kInvalidArgument, key);
    ExpectError(ParseLlamaConfig(With(key, -4), "cfg.json"), StatusCode::kInvalidArgument, key);
    ExpectError(ParseLlamaConfig(With(key, 32.5), "cfg.json"), StatusCode::kInvalidArgument, key);
    ExpectError(ParseLlamaConfig(With(key, "32"), "cfg.json"), StatusCode::kInvalidArgument, key);
  }
  ExpectError(ParseLlamaConfig(With("num_key_value_heads", 0), "cfg.json"), StatusCode::kInvalidArgument,
              "num_key_value_heads");
  ExpectError(ParseLlamaConfig(With("rms_norm_eps", -1.0), "cfg.json"), StatusCode::kInvalidArgument, "rms_norm_eps");
  ExpectError(ParseLlamaConfig(With("rope_theta", "big"), "cfg.json"), StatusCode::kInvalidArgument, "rope_theta");
  ExpectError(ParseLlamaConfig(With("tie_word_embeddings", 1), "cfg.json"), StatusCode::kInvalidArgument,
              "tie_word_embeddings");
  ExpectError(ParseLlamaConfig(With("eos_token_id", -2), "cfg.json"), StatusCode::kInvalidArgument, "eos_token_id");
  ExpectError(ParseLlamaConfig(Json::array(), "cfg.json"), StatusCode::kInvalidArgument, "not a JSON object");
}

TEST(LlamaConfigTest, RejectsInconsistentHeadCounts) {
  ExpectError(ParseLlamaConfig(With("num_attention_heads", 30), "cfg.json"), StatusCode::kInvalidArgument,
              "not a multiple of num_attention_heads");
  ExpectError(ParseLlamaConfig(With("num_key_value_heads", 5), "cfg.json"), StatusCode::kInvalidArgument,
              "not a multiple of num_key_value_heads");
  ExpectError(ParseLlamaConfig(With("num_key_value_heads", 64), "cfg.json"), StatusCode::kInvalidArgument,
              "num_key_value_heads");
  Json odd = Llama2Config();
  odd["hidden_size"] = 96;
  odd["num_attention_heads"] = 32;  // head_dim 3
  odd["num_key_value_heads"] = 32;
  ExpectError(ParseLlamaConfig(odd, "cfg.json"), StatusCode::kInvalidArgument, "odd");
}

TEST(LlamaConfigTest, RejectsVariantsThatChangeTheMath) {
  ExpectError(ParseLlamaConfig(With("model_type", "mistral"), "cfg.json"), StatusCode::kInvalidArgument, "mistral");
  ExpectError(ParseLlamaConfig(With("hidden_act", "gelu"), "cfg.json"), StatusCode::kUnimplemented, "gelu");
  ExpectError(ParseLlamaConfig(With("rope_scaling", {{"rope_type", "llama3"}, {"factor", 8.0}}), "cfg.json"),
              StatusCode::kUnimplemented, "rope_scaling {\"factor\":8.0,\"rope_type\":\"llama3\"} is not supported");
  ExpectError(ParseLlamaConfig(With("attention_bias", true), "cfg.json"), StatusCode::kUnimplemented, "attention_bias");
  ExpectError(ParseLlamaConfig(With("mlp_bias", true), "cfg.json"), StatusCode::kUnimplemented, "mlp_bias");
  ExpectError(ParseLlamaConfig(With("head_dim", 64), "cfg.json"), StatusCode::kUnimplemented, "head_dim");
  EXPECT_TRUE(ParseLlamaConfig(With("head_dim", 128), "cfg.json").ok());
  EXPECT_TRUE(ParseLlamaConfig(With("attention_bias", false), "cfg.json").ok());
}

// A JSON value `levels` deep ([[...]]), parsed rather than built, since building copies recursively.
Json Nested(int levels) { return Json::parse(std::string(levels, '[') + std::string(levels, ']')); }

// Found with fuzz/model_config_fuzzer on a crafted input (libFuzzer's length limit keeps it from nesting
// this deep itself): a value nested 40,000 levels deep (under ASan; more without) overflowed the stack
// when its error message dumped it.
TEST(LlamaConfigTest, RefusesConfigsNestedTooDeeply) {
  Json deep = Llama2Config();
  deep["vocab_size"] = Nested(200'000);  // moved in: a copy would recurse as deep
  ExpectError(ParseLlamaConfig(deep, "cfg.json"), StatusCode::kInvalidArgument,
              "config nests deeper than 64 levels");
  // 64 levels in all (the config object is one) is what a file may hold, whatever the field.
  EXPECT_TRUE(ParseLlamaConfig(With("quantization_config", Nested(63)), "cfg.json").ok());
  ExpectError(ParseLlamaConfig(With("quantization_config", Nested(64)), "cfg.json"),
              StatusCode::kInvalidArgument, "config nests deeper than 64 levels");
}

TEST(LlamaConfigTest, LoadsAFileAndNamesItInErrors) {
  const fs::path dir = fs::temp_directory_path() / ("dtm_model_config_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "config.json").string();
  std::ofstream(path) << Llama2Config().dump(2);
  StatusOr<LlamaConfig> c = LoadLlamaConfig(path);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->vocab_size, 32000);

  std::ofstream(path, std::ios::trunc) << "{\"vocab_size\": ";
  c = LoadLlamaConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(c.status().message().find(path), std::string::npos);

  std::ofstream(path, std::ios::trunc) << With("hidden_size", -1).dump();
  c = LoadLlamaConfig(path);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find(path + ": "), std::string::npos);

  c = LoadLlamaConfig((dir / "missing.json").string());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), StatusCode::kNotFound);
  EXPECT_NE(c.status().message().find("missing.json"), std::string::npos);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace dtm
