// ReadModelGeometry: the component sizes the coordinator derives from config.json, which must equal
// the tensor sizes workers report (worker/task_executor_test checks those on the same shapes).
#include "coordinator/model_geometry.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace dtm {
namespace {

class ModelGeometryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("model_geometry_test_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  void WriteConfig(const std::string& json) { std::ofstream(dir_ / "config.json") << json; }
  std::filesystem::path dir_;
};

TEST_F(ModelGeometryTest, SizesTheTinyModelsComponentsLikeItsTensors) {
  // build/tiny-model/config.json: GQA with an explicit head_dim.
  WriteConfig(R"({"hidden_size": 128, "intermediate_size": 384, "num_attention_heads": 4,
                  "num_key_value_heads": 2, "head_dim": 32, "num_hidden_layers": 4})");
  std::optional<ModelGeometry> g = ReadModelGeometry(dir_.string());
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->num_layers, 4);
  ASSERT_EQ(g->component_params.size(), 28u);
  for (int layer = 0; layer < 4; ++layer) {
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    EXPECT_EQ(g->component_params.at(p + "self_attn.q_proj"), 16384u);
    EXPECT_EQ(g->component_params.at(p + "self_attn.k_proj"), 8192u);
    EXPECT_EQ(g->component_params.at(p + "self_attn.v_proj"), 8192u);
    EXPECT_EQ(g->component_params.at(p + "self_attn.o_proj"), 16384u);
    EXPECT_EQ(g->component_params.at(p + "mlp.gate_proj"), 49152u);
    EXPECT_EQ(g->component_params.at(p + "mlp.up_proj"), 49152u);
    EXPECT_EQ(g->component_params.at(p + "mlp.down_proj"), 49152u);
  }
}

TEST_F(ModelGeometryTest, DefaultsLikeHuggingFaceForLlama2_7B) {
  // Llama-2-7B's config has neither num_key_value_heads in old exports nor head_dim.
  WriteConfig(R"({"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32,
                  "num_hidden_layers": 32})");
  std::optional<ModelGeometry> g = ReadModelGeometry(dir_.string());
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->component_params.size(), 32u * 7);
  EXPECT_EQ(g->component_params.at("model.layers.31.self_attn.k_proj"), 4096u * 4096);
  EXPECT_EQ(g->component_params.at("model.layers.0.mlp.down_proj"), 4096u * 11008);
  uint64_t total = 0;
  for (const auto& [name, n] : g->component_params) total += n;
  EXPECT_EQ(total, uint64_t{32} * (4 * uint64_t{4096} * 4096 + 3 * uint64_t{4096} * 11008));  // 6.48e9 of the 6.74e9 parameters
}

TEST_F(ModelGeometryTest, KnowsTheLayersWithoutSizesAndNothingWithoutAConfig) {
  EXPECT_FALSE(ReadModelGeometry(dir_.string()).has_value());
  WriteConfig(R"({"num_hidden_layers": 3})");
  std::optional<ModelGeometry> g = ReadModelGeometry(dir_.string());
  ASSERT_TRUE(g.has_value());
  EXPECT_EQ(g->num_layers, 3);
  EXPECT_TRUE(g->component_params.empty());
  WriteConfig(R"({"num_hidden_layers": "3"})");
  EXPECT_FALSE(ReadModelGeometry(dir_.string()).has_value());
  WriteConfig("{not json");
  EXPECT_FALSE(ReadModelGeometry(dir_.string()).has_value());
}

}  // namespace
}  // namespace dtm
