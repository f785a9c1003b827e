#include "worker/engine/llama_model.h"

#include <gtest/gtest.h>

#include "tests/worker/engine/test_models.h"
#include "worker/engine/checkpoint.h"

namespace dtm {
namespace {

using testing::RandomPrefixes;
using testing::SmallConfig;
using testing::SmallModel;

TEST(LlamaModelTest, KvCacheGenerationEqualsArgmaxOfTheFullForward) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  torch::NoGradGuard no_grad;
  const int64_t n = 9, m = 40;
  torch::Tensor generated = model->GenerateGreedy(RandomPrefixes(5, n, 97, 1), m);  // [5, n + m]
  ASSERT_EQ(generated.size(1), n + m);
  torch::Tensor logits = model->Logits(model->Forward(generated));  // [5, n + m, V]
  torch::Tensor predicted = logits.slice(1, n - 1, n + m - 1).argmax(-1);
  EXPECT_TRUE(torch::equal(predicted, generated.slice(1, n, n + m)));
}

TEST(LlamaModelTest, BatchedForwardEqualsOneSequenceAtATime) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = RandomPrefixes(3, 17, 97, 2);
  torch::Tensor batched = model->Forward(tokens);
  for (int64_t b = 0; b < 3; ++b) {
    torch::Tensor single = model->Forward(tokens.slice(0, b, b + 1));
    EXPECT_TRUE(torch::allclose(batched[b], single[0], 1e-5, 1e-5)) << "row " << b;
  }
}

TEST(LlamaModelTest, IncrementalForwardWithCacheEqualsFullForward) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = RandomPrefixes(2, 12, 97, 3);
  torch::Tensor full = model->Forward(tokens);
  KvCache cache = model->NewCache(2, 12);
  torch::Tensor first = model->Forward(tokens.slice(1, 0, 5), &cache, 0);
  torch::Tensor rest = model->Forward(tokens.slice(1, 5, 12), &cache, 5);
  EXPECT_TRUE(torch::allclose(torch::cat({first, rest}, 1), full, 1e-5, 1e-5));
  EXPECT_EQ(cache.length, 12);
}

TEST(LlamaModelTest, GroupedQueryAttentionEqualsMultiHeadWithRepeatedKeysAndValues) {
  LlamaConfig gqa_config = SmallConfig();
  LlamaConfig mha_config = gqa_config;
  mha_config.num_key_value_heads = mha_config.num_attention_heads;
  std::unique_ptr<LlamaModel> gqa = SmallModel(gqa_config);
  std::unique_ptr<LlamaModel> mha = SmallModel(mha_config, /*seed=*/99);
  torch::NoGradGuard no_grad;
  // Copy every weight; k and v of the MHA model repeat each kv head for the query heads it serves.
  const int64_t hd = gqa_config.head_dim(), rep = 2;
  auto gqa_weights = gqa->NamedWeights();
  auto mha_weights = mha->NamedWeights();
  for (size_t i = 0; i < gqa_weights.size(); ++i) {
    const std::string& name = gqa_weights[i].first;
    torch::Tensor src = gqa_weights[i].second;
    if (name.find("k_proj") != std::string::npos || name.find("v_proj") != std::string::npos) {
      src = src.view({gqa_config.num_key_value_heads, hd, -1}).repeat_interleave(rep, 0).reshape({-1, src.size(1)});
    }
    mha_weights[i].second.copy_(src);
  }
  torch::Tensor tokens = RandomPrefixes(2, 15, 97, 4);
  EXPECT_TRUE(torch::allclose(gqa->Logits(gqa->Forward(tokens)), mha->Logits(mha->Forward(tokens)), 1e-5, 1e-5));
}

TEST(LlamaModelTest, TiedEmbeddingsShareOneTensorWithTheLmHead) {
  LlamaConfig config = SmallConfig();
  config.tie_word_embeddings = true;
  std::unique_ptr<LlamaModel> model = SmallModel(config);
  torch::NoGradGuard no_grad;
  auto named = model->NamedWeights();
  for (const auto& [name, w] : named) EXPECT_NE(name, "lm_head.weight");
  torch::Tensor hidden = model->Forward(RandomPrefixes(1, 4, 97, 5));
  torch::Tensor expected = torch::matmul(hidden, named.front().second.t());
  EXPECT_TRUE(torch::allclose(model->Logits(hidden), expected));
}

TEST(LlamaModelTest, ReloadedCheckpointGivesIdenticalLogits) {
  for (bool tied : {false, true}) {
    LlamaConfig config = SmallConfig();
    config.tie_word_embeddings = tied;
    config.rope_theta = 5000.0;
    std::unique_ptr<LlamaModel> model = SmallModel(config);
    testing::TempDir dir;
    ASSERT_TRUE(WriteCheckpoint(dir.path(), config, model->NamedWeights()).ok());
    StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir.path());
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().ToString();
    EXPECT_DOUBLE_EQ((*checkpoint)->config().rope_theta, 5000.0);
    StatusOr<std::unique_ptr<LlamaModel>> loaded = LlamaModel::Load(**checkpoint, ModelOptions{});
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    torch::NoGradGuard no_grad;
    torch::Tensor tokens = RandomPrefixes(2, 10, 97, 6);
    EXPECT_TRUE(torch::equal(model->Logits(model->Forward(tokens)), (*loaded)->Logits((*loaded)->Forward(tokens))))
        << "tied=" << tied;
  }
}

TEST(LlamaModelTest, RefusesSequencesLongerThanTheContext) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  torch::NoGradGuard no_grad;
  EXPECT_THROW(model->Forward(RandomPrefixes(1, 129, 97, 7)), c10::Error);
}

TEST(LlamaModelTest, HalfPrecisionForwardStaysCloseToFloat32) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  LlamaConfig config = SmallConfig();
  testing::TempDir dir;
  ASSERT_TRUE(WriteCheckpoint(dir.path(), config, model->NamedWeights()).ok());
  auto checkpoint = Checkpoint::Open(dir.path());
  ASSERT_TRUE(checkpoint.ok());
  auto bf16 = LlamaModel::Load(**checkpoint, ModelOptions{torch::kBFloat16, torch::kCPU});
  ASSERT_TRUE(bf16.ok());
  torch::NoGradGuard no_grad;
  torch::Tensor tokens = RandomPrefixes(1, 8, 97, 8);
  torch::Tensor a = model->Logits(model->Forward(tokens));
  torch::Tensor b = (*bf16)->Logits((*bf16)->Forward(tokens)).to(torch::kFloat32);
  // The loader converts the float32 checkpoint to the compute dtype.
  EXPECT_EQ((*bf16)->ComponentWeight({0, ComponentKind::kQ}).scalar_type(), torch::kBFloat16);
  EXPECT_LT((a - b).abs().max().item<double>() / a.abs().max().item<double>(), 0.1);
}

}  // namespace
}  // namespace dtm
