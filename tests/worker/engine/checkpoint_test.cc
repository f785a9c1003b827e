#include "worker/engine/checkpoint.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "common/jsonl.h"
#include "worker/engine/tensor_util.h"

#include "tests/worker/engine/test_files.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

using testing::ReadBytes;
using testing::WriteBytes;

std::string TensorBytes(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

// A tiny Llama: V=32, D=16, I=24, 2 layers, 4 heads of 4 dims, `kv_heads` key/value heads.
LlamaConfig TinyConfig(int64_t kv_heads = 4, bool tied = false) {
  LlamaConfig c;
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = kv_heads;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  return c;
}

NamedTensors RandomWeights(const LlamaConfig& config, torch::ScalarType dtype = torch::kFloat32, uint64_t seed = 1) {
  torch::manual_seed(seed);
  NamedTensors tensors;
  for (const auto& [name, shape] : ExpectedLlamaTensors(config)) {
    tensors.push_back({name, torch::randn(shape).to(dtype)});
  }
  return tensors;
}

NamedTensors Without(NamedTensors tensors, const std::string& name) {
  tensors.erase(std::remove_if(tensors.begin(), tensors.end(), [&](const auto& e) { return e.first == name; }),
                tensors.end());
  return tensors;
}

// The shard file names of a sharded checkpoint, in order.
std::vector<std::string> ShardNames(const std::string& dir) {
  std::set<std::string> names;
  StatusOr<nlohmann::json> index = ReadJsonFile(dir + "/model.safetensors.index.json");
  if (!index.ok()) return {};
  for (const auto& [tensor, shard] : (*index)["weight_map"].items()) names.insert(shard.get<std::string>());
  return {names.begin(), names.end()};
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    root_ = fs::temp_directory_path() / ("dtm_checkpoint_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
  }
  void TearDown() override { fs::remove_all(root_); }

  std::string Dir(const std::string& name) const { return (root_ / name).string(); }

  // Writes a checkpoint and opens it, failing the test on any error.
  std::unique_ptr<Checkpoint> WriteAndOpen(const std::string& name, const LlamaConfig& config,
                                           const NamedTensors& tensors, int64_t max_shard_bytes = 0) {
    Status written = WriteCheckpoint(Dir(name), config, tensors, max_shard_bytes);
    EXPECT_TRUE(written.ok()) << written.ToString();
    StatusOr<std::unique_ptr<Checkpoint>> opened = Checkpoint::Open(Dir(name));
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    return opened.ok() ? std::move(opened).value() : nullptr;
  }

  // Expects every tensor to load bit-exact in its stored dtype.
  static void ExpectHolds(const Checkpoint& checkpoint, const NamedTensors& tensors) {
    for (const auto& [name, expected] : tensors) {
      SCOPED_TRACE(name);
      ASSERT_TRUE(checkpoint.Has(name));
      StatusOr<torch::Tensor> loaded =
          checkpoint.Load(name, expected.sizes().vec(), expected.scalar_type(), torch::kCPU);
      ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
      EXPECT_EQ(loaded->scalar_type(), expected.scalar_type());
      EXPECT_EQ(TensorBytes(*loaded), TensorBytes(expected));
    }
  }

  static void ExpectError(const Status& status, StatusCode code, const std::vector<std::string>& needles) {
    EXPECT_EQ(status.code(), code) << status.ToString();
    for (const std::string& needle : needles) {
      EXPECT_NE(status.message().find(needle), std::string::npos) << "'" << needle << "' not in: " << status.message();
    }
    EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
  }

  // Expects Open of the folder `name` to fail with `code` and a message holding every needle.
  void ExpectOpenFails(const std::string& name, StatusCode code, const std::vector<std::string>& needles) {
    StatusOr<std::unique_ptr<Checkpoint>> opened = Checkpoint::Open(Dir(name));
    ASSERT_FALSE(opened.ok());
    ExpectError(opened.status(), code, needles);
  }

  fs::path root_;
};

TEST_F(CheckpointTest, OpensASingleFileCheckpoint) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  auto checkpoint = WriteAndOpen("single", config, weights);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_TRUE(fs::exists(Dir("single") + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(Dir("single") + "/model.safetensors.index.json"));
  EXPECT_EQ(checkpoint->dir(), Dir("single"));
  EXPECT_EQ(checkpoint->config().hidden_size, 16);
  EXPECT_EQ(checkpoint->config().torch_dtype, "float32");
  EXPECT_EQ(checkpoint->TensorNames().size(), weights.size());
  ExpectHolds(*checkpoint, weights);
  EXPECT_FALSE(checkpoint->Has("model.layers.2.mlp.up_proj.weight"));
}

TEST_F(CheckpointTest, OpensAShardedCheckpoint) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  auto checkpoint = WriteAndOpen("sharded", config, weights, /*max_shard_bytes=*/4000);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_FALSE(fs::exists(Dir("sharded") + "/model.safetensors"));
  StatusOr<nlohmann::json> index = ReadJsonFile(Dir("sharded") + "/model.safetensors.index.json");
  ASSERT_TRUE(index.ok());
  EXPECT_EQ((*index)["weight_map"].size(), weights.size());
  std::set<std::string> shards;
  for (const auto& [tensor, shard] : (*index)["weight_map"].items()) shards.insert(shard.get<std::string>());
  EXPECT_GT(shards.size(), 2u);
  ASSERT_LT(shards.size(), 10u);
  const std::string count = std::to_string(shards.size());
  EXPECT_EQ(*shards.begin(), "model-00001-of-0000" + count + ".safetensors");
  EXPECT_EQ(*shards.rbegin(), "model-0000" + count + "-of-0000" + count + ".safetensors");
  int64_t total = 0;
  for (const auto& [name, t] : weights) total += t.numel() * 4;
  EXPECT_EQ((*index)["metadata"]["total_size"], total);
  ExpectHolds(*checkpoint, weights);
}

TEST_F(CheckpointTest, WritesOneFileWhenTheTensorsFitInOneShard) {
  LlamaConfig config = TinyConfig();
  auto checkpoint = WriteAndOpen("fits", config, RandomWeights(config), /*max_shard_bytes=*/int64_t{1} << 30);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_TRUE(fs::exists(Dir("fits") + "/model.safetensors"));
}

TEST_F(CheckpointTest, ReplacesTheOtherLayoutWhenRewritten) {
  LlamaConfig config = TinyConfig();
  NamedTensors first = RandomWeights(config, torch::kFloat32, 1);
  NamedTensors second = RandomWeights(config, torch::kFloat32, 2);
  ASSERT_TRUE(WriteCheckpoint(Dir("re"), config, first, 4000).ok());
  auto checkpoint = WriteAndOpen("re", config, second);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_FALSE(fs::exists(Dir("re") + "/model.safetensors.index.json"));
  ExpectHolds(*checkpoint, second);
}

TEST_F(CheckpointTest, StoresHalfAndBFloat16WeightsBitExact) {
  for (torch::ScalarType dtype : {torch::kFloat16, torch::kBFloat16}) {
    SCOPED_TRACE(DTypeName(dtype));
    LlamaConfig config = TinyConfig();
    NamedTensors weights = RandomWeights(config, dtype);
    const std::string name = DTypeName(dtype);
    auto checkpoint = WriteAndOpen(name, config, weights, /*max_shard_bytes=*/3000);
    ASSERT_NE(checkpoint, nullptr);
    EXPECT_EQ(checkpoint->config().torch_dtype, name);
    ExpectHolds(*checkpoint, weights);
    const SafetensorsTensorInfo* info = checkpoint->Find("model.norm.weight");
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->dtype, dtype == torch::kFloat16 ? SafetensorsDType::kF16 : SafetensorsDType::kBF16);
  }
}

TEST_F(CheckpointTest, ConvertsDTypeOnLoad) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config, torch::kBFloat16);
  auto checkpoint = WriteAndOpen("convert", config, weights);
  ASSERT_NE(checkpoint, nullptr);
  const auto& [name, stored] = weights[1];
  StatusOr<torch::Tensor> wide = checkpoint->Load(name, stored.sizes().vec(), torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(wide.ok()) << wide.status().ToString();
  EXPECT_EQ(wide->scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(*wide, stored.to(torch::kFloat32)));
  StatusOr<torch::Tensor> half = checkpoint->Load(name, stored.sizes().vec(), torch::kFloat16, torch::kCPU);
  ASSERT_TRUE(half.ok());
  EXPECT_TRUE(torch::equal(*half, stored.to(torch::kFloat16)));

  NamedTensors f32 = RandomWeights(config, torch::kFloat32);
  auto f32_checkpoint = WriteAndOpen("convert32", config, f32);
  ASSERT_NE(f32_checkpoint, nullptr);
  StatusOr<torch::Tensor> narrow =
      f32_checkpoint->Load(f32[0].first, f32[0].second.sizes().vec(), torch::kBFloat16, torch::kCPU);
  ASSERT_TRUE(narrow.ok());
  EXPECT_TRUE(torch::equal(*narrow, f32[0].second.to(torch::kBFloat16)));
}

TEST_F(CheckpointTest, LoadsOntoTheGpuWhenThereIsOne) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  LlamaConfig config = TinyConfig(2);
  NamedTensors weights = RandomWeights(config, torch::kFloat16);
  auto checkpoint = WriteAndOpen("gpu", config, weights, 3000);
  ASSERT_NE(checkpoint, nullptr);
  for (const auto& [name, stored] : weights) {
    StatusOr<torch::Tensor> t = checkpoint->Load(name, stored.sizes().vec(), torch::kBFloat16, torch::kCUDA);
    ASSERT_TRUE(t.ok()) << t.status().ToString();
    EXPECT_TRUE(t->is_cuda());
    EXPECT_TRUE(torch::equal(t->cpu(), stored.to(torch::kBFloat16))) << name;
  }
}

TEST_F(CheckpointTest, LoadsGroupedQueryAttentionShapes) {
  for (int64_t kv_heads : {1, 2}) {
    LlamaConfig config = TinyConfig(kv_heads);
    NamedTensors weights = RandomWeights(config);
    auto checkpoint = WriteAndOpen("gqa" + std::to_string(kv_heads), config, weights);
    ASSERT_NE(checkpoint, nullptr);
    EXPECT_EQ(checkpoint->config().num_key_value_heads, kv_heads);
    EXPECT_EQ(checkpoint->Find("model.layers.1.self_attn.k_proj.weight")->shape, (std::vector<int64_t>{kv_heads * 4, 16}));
    EXPECT_EQ(checkpoint->Find("model.layers.1.self_attn.q_proj.weight")->shape, (std::vector<int64_t>{16, 16}));
    ExpectHolds(*checkpoint, weights);
  }
}

TEST_F(CheckpointTest, OpensTiedCheckpointsWithOrWithoutLmHead) {
  LlamaConfig config = TinyConfig(4, /*tied=*/true);
  NamedTensors weights = RandomWeights(config);
  ASSERT_TRUE(std::none_of(weights.begin(), weights.end(), [](const auto& e) { return e.first == "lm_head.weight"; }));
  auto tied = WriteAndOpen("tied", config, weights);
  ASSERT_NE(tied, nullptr);
  EXPECT_TRUE(tied->config().tie_word_embeddings);
  EXPECT_FALSE(tied->Has("lm_head.weight"));

  weights.push_back({"lm_head.weight", torch::randn({32, 16})});
  auto with_head = WriteAndOpen("tied_with_head", config, weights);
  ASSERT_NE(with_head, nullptr);
  EXPECT_TRUE(with_head->Has("lm_head.weight"));
}

TEST_F(CheckpointTest, RejectsAnUntiedCheckpointWithoutLmHead) {
  LlamaConfig config = TinyConfig();
  ASSERT_TRUE(WriteCheckpoint(Dir("headless"), config, Without(RandomWeights(config), "lm_head.weight")).ok());
  ExpectOpenFails("headless", StatusCode::kNotFound, {"lm_head.weight", Dir("headless")});
}

TEST_F(CheckpointTest, ReadsCustomRopeThetaAndNormEps) {
  LlamaConfig config = TinyConfig();
  config.rope_theta = 500000.0;
  config.rms_norm_eps = 1e-5;
  config.bos_token_id = 5;
  config.eos_token_id = 6;
  auto checkpoint = WriteAndOpen("rope", config, RandomWeights(config));
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_DOUBLE_EQ(checkpoint->config().rope_theta, 500000.0);
  EXPECT_DOUBLE_EQ(checkpoint->config().rms_norm_eps, 1e-5);
  EXPECT_EQ(checkpoint->config().bos_token_id, 5);
  EXPECT_EQ(checkpoint->config().eos_token_id, 6);
}

TEST_F(CheckpointTest, IgnoresExtraTensors) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  weights.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", torch::randn({2})});
  auto checkpoint = WriteAndOpen("extra", config, weights);
  ASSERT_NE(checkpoint, nullptr);
  EXPECT_TRUE(checkpoint->Has("model.layers.0.self_attn.rotary_emb.inv_freq"));
}

TEST_F(CheckpointTest, FingerprintIgnoresShardingAndTensorOrder) {
  LlamaConfig config = TinyConfig(2);
  NamedTensors weights = RandomWeights(config, torch::kBFloat16);
  auto single = WriteAndOpen("single", config, weights);
  auto sharded = WriteAndOpen("sharded", config, weights, 2000);
  NamedTensors reversed(weights.rbegin(), weights.rend());
  auto reordered = WriteAndOpen("reordered", config, reversed, 5000);
  ASSERT_TRUE(single && sharded && reordered);
  StatusOr<std::string> a = single->Fingerprint();
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->size(), 64u);
  EXPECT_EQ(*sharded->Fingerprint(), *a);
  EXPECT_EQ(*reordered->Fingerprint(), *a);
  EXPECT_EQ(*single->Fingerprint(), *a);  // cached, and stable
  auto reopened = Checkpoint::Open(Dir("single"));
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->Fingerprint(), *a);
}

TEST_F(CheckpointTest, FingerprintChangesWithAnyWeightOrTheConfig) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  auto base = WriteAndOpen("base", config, weights);
  ASSERT_NE(base, nullptr);
  const std::string fingerprint = *base->Fingerprint();

  NamedTensors changed = weights;
  changed[5].second = changed[5].second.clone();
  changed[5].second.view(-1)[3] = std::nextafter(changed[5].second.view(-1)[3].item<float>(), 1e9f);
  auto one_weight = WriteAndOpen("one_weight", config, changed);
  ASSERT_NE(one_weight, nullptr);
  EXPECT_NE(*one_weight->Fingerprint(), fingerprint);

  LlamaConfig other = config;
  other.rope_theta = 20000.0;
  auto other_config = WriteAndOpen("other_config", other, weights);
  ASSERT_NE(other_config, nullptr);
  EXPECT_NE(*other_config->Fingerprint(), fingerprint);

  NamedTensors bf16 = weights;
  for (auto& entry : bf16) entry.second = entry.second.to(torch::kBFloat16).to(torch::kFloat32);
  NamedTensors bf16_stored = weights;
  for (auto& entry : bf16_stored) entry.second = entry.second.to(torch::kBFloat16);
  auto as_f32 = WriteAndOpen("as_f32", config, bf16);
  auto as_bf16 = WriteAndOpen("as_bf16", config, bf16_stored);
  ASSERT_TRUE(as_f32 && as_bf16);
  EXPECT_NE(*as_f32->Fingerprint(), *as_bf16->Fingerprint());  // the stored dtype is part of it
}

TEST_F(CheckpointTest, RejectsAMissingFolderOrConfig) {
  ExpectOpenFails("nowhere", StatusCode::kNotFound, {"nowhere"});
  LlamaConfig config = TinyConfig();
  ASSERT_TRUE(WriteCheckpoint(Dir("noconfig"), config, RandomWeights(config)).ok());
  fs::remove(Dir("noconfig") + "/config.json");
  ExpectOpenFails("noconfig", StatusCode::kNotFound, {"config.json"});
}

TEST_F(CheckpointTest, RejectsAConfigThatIsNotJson) {
  LlamaConfig config = TinyConfig();
  ASSERT_TRUE(WriteCheckpoint(Dir("badjson"), config, RandomWeights(config)).ok());
  WriteBytes(Dir("badjson") + "/config.json", "{\"hidden_size\": 16,");
  ExpectOpenFails("badjson", StatusCode::kDataLoss, {"config.json"});
}

TEST_F(CheckpointTest, RejectsInvalidConfigValues) {
  LlamaConfig config = TinyConfig();
  ASSERT_TRUE(WriteCheckpoint(Dir("badvalues"), config, RandomWeights(config)).ok());
  nlohmann::json j = config.ToJson();
  j["num_key_value_heads"] = 3;
  WriteBytes(Dir("badvalues") + "/config.json", j.dump());
  ExpectOpenFails("badvalues", StatusCode::kInvalidArgument, {"config.json", "num_key_value_heads"});
  j = config.ToJson();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  WriteBytes(Dir("badvalues") + "/config.json", j.dump());
  ExpectOpenFails("badvalues", StatusCode::kUnimplemented, {"config.json", "rope_scaling"});
}

TEST_F(CheckpointTest, RejectsAFolderWithoutWeights) {
  LlamaConfig config = TinyConfig();
  ASSERT_TRUE(WriteCheckpoint(Dir("noweights"), config, RandomWeights(config)).ok());
  fs::remove(Dir("noweights") + "/model.safetensors");
  ExpectOpenFails("noweights", StatusCode::kNotFound, {Dir("noweights"), "model.safetensors"});
  WriteBytes(Dir("noweights") + "/pytorch_model.bin", "pickle");
  ExpectOpenFails("noweights", StatusCode::kUnimplemented, {Dir("noweights"), ".bin"});
}

TEST_F(CheckpointTest, RejectsAWeightMapNamingAMissingShard) {
  LlamaConfig config = TinyConfig();
  ASSERT_TRUE(WriteCheckpoint(Dir("lostshard"), config, RandomWeights(config), 4000).ok());
  std::vector<std::string> shards = ShardNames(Dir("lostshard"));
  ASSERT_GE(shards.size(), 3u);
  fs::remove(Dir("lostshard") + "/" + shards[1]);
  ExpectOpenFails("lostshard", StatusCode::kNotFound, {"model.safetensors.index.json", shards[1]});
}

TEST_F(CheckpointTest, RejectsInconsistentWeightMaps) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  ASSERT_TRUE(WriteCheckpoint(Dir("map"), config, weights, 4000).ok());
  const std::string index_path = Dir("map") + "/model.safetensors.index.json";
  const nlohmann::json index = *ReadJsonFile(index_path);
  const std::string first_shard = ShardNames(Dir("map")).front();

  nlohmann::json wrong_shard = index;
  wrong_shard["weight_map"]["model.norm.weight"] = first_shard;
  WriteBytes(index_path, wrong_shard.dump());
  ExpectOpenFails("map", StatusCode::kDataLoss, {"model.safetensors.index.json", "model.norm.weight"});

  nlohmann::json absent = index;
  absent["weight_map"]["model.layers.9.mlp.up_proj.weight"] = first_shard;
  WriteBytes(index_path, absent.dump());
  ExpectOpenFails("map", StatusCode::kDataLoss, {"model.safetensors.index.json", "model.layers.9.mlp.up_proj.weight"});

  nlohmann::json outside = index;
  outside["weight_map"]["model.norm.weight"] = "../model.safetensors";
  WriteBytes(index_path, outside.dump());
  ExpectOpenFails("map", StatusCode::kDataLoss, {"model.safetensors.index.json", "../model.safetensors"});

  WriteBytes(index_path, R"({"metadata": {}})");
  ExpectOpenFails("map", StatusCode::kDataLoss, {"model.safetensors.index.json", "weight_map"});
  WriteBytes(index_path, R"({"weight_map": )");
  ExpectOpenFails("map", StatusCode::kDataLoss, {"model.safetensors.index.json"});
}

TEST_F(CheckpointTest, RejectsATensorStoredInTwoShards) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  ASSERT_TRUE(WriteCheckpoint(Dir("twice"), config, weights, 4000).ok());
  // Rewrite the last shard with an extra copy of a tensor that lives in the first.
  std::vector<std::string> shards = ShardNames(Dir("twice"));
  ASSERT_GE(shards.size(), 2u);
  const std::string last = Dir("twice") + "/" + shards.back();
  auto file = SafetensorsFile::Open(last);
  ASSERT_TRUE(file.ok());
  NamedTensors shard;
  for (const SafetensorsTensorInfo& info : (*file)->tensors()) shard.push_back({info.name, *(*file)->Load(info.name)});
  file->reset();
  shard.push_back({"model.embed_tokens.weight", weights[0].second});
  ASSERT_TRUE(WriteSafetensors(last, shard).ok());
  ExpectOpenFails("twice", StatusCode::kDataLoss, {"model.embed_tokens.weight", shards.front(), shards.back()});
}

TEST_F(CheckpointTest, RejectsAMissingTensor) {
  LlamaConfig config = TinyConfig();
  const std::string missing = "model.layers.1.self_attn.k_proj.weight";
  ASSERT_TRUE(WriteCheckpoint(Dir("missing"), config, Without(RandomWeights(config), missing), 3000).ok());
  ExpectOpenFails("missing", StatusCode::kNotFound, {missing, Dir("missing")});
}

TEST_F(CheckpointTest, RejectsATensorOfTheWrongShapeAtOpen) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  for (auto& entry : weights) {
    if (entry.first == "model.layers.0.mlp.down_proj.weight") entry.second = torch::randn({24, 16});
  }
  ASSERT_TRUE(WriteCheckpoint(Dir("shape"), config, weights).ok());
  ExpectOpenFails("shape", StatusCode::kInvalidArgument,
                  {"model.layers.0.mlp.down_proj.weight", "model.safetensors", "[24, 16]", "[16, 24]"});
}

TEST_F(CheckpointTest, RejectsAWrongExpectedShapeAtLoad) {
  LlamaConfig config = TinyConfig();
  auto checkpoint = WriteAndOpen("load", config, RandomWeights(config));
  ASSERT_NE(checkpoint, nullptr);
  StatusOr<torch::Tensor> t = checkpoint->Load("model.norm.weight", {17}, torch::kFloat32, torch::kCPU);
  ASSERT_FALSE(t.ok());
  ExpectError(t.status(), StatusCode::kInvalidArgument, {"model.norm.weight", "model.safetensors", "[16]", "[17]"});
  ExpectError(checkpoint->Load("nope.weight", {1}, torch::kFloat32, torch::kCPU).status(), StatusCode::kNotFound,
              {"nope.weight", Dir("load")});
}

TEST_F(CheckpointTest, RejectsIntegerWeights) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  weights.back().second = torch::zeros({32, 16}, torch::kInt32);
  ASSERT_TRUE(WriteCheckpoint(Dir("ints"), config, weights).ok());
  ExpectOpenFails("ints", StatusCode::kInvalidArgument, {"lm_head.weight", "I32"});
}

TEST_F(CheckpointTest, RejectsACorruptWeightsFile) {
  LlamaConfig config = TinyConfig();
  ASSERT_TRUE(WriteCheckpoint(Dir("cut"), config, RandomWeights(config)).ok());
  const std::string path = Dir("cut") + "/model.safetensors";
  const std::string full = ReadBytes(path);
  WriteBytes(path, full.substr(0, full.size() - 10));
  ExpectOpenFails("cut", StatusCode::kDataLoss, {"model.safetensors"});
  WriteBytes(path, full.substr(0, 100));
  ExpectOpenFails("cut", StatusCode::kDataLoss, {"model.safetensors"});
}

TEST_F(CheckpointTest, RefusesToWriteATensorTwice) {
  LlamaConfig config = TinyConfig();
  NamedTensors weights = RandomWeights(config);
  weights.push_back(weights[0]);
  Status s = WriteCheckpoint(Dir("dup"), config, weights, 4000);
  ExpectError(s, StatusCode::kInvalidArgument, {"model.embed_tokens.weight"});
}

TEST_F(CheckpointTest, ListsTheHfTensorsOfALlama) {
  LlamaConfig config = TinyConfig(2);
  auto expected = ExpectedLlamaTensors(config);
  ASSERT_EQ(expected.size(), 1 + 2 * 9 + 1 + 1u);
  EXPECT_EQ(expected[0].first, "model.embed_tokens.weight");
  EXPECT_EQ(expected[3].first, "model.layers.0.self_attn.k_proj.weight");
  EXPECT_EQ(expected[3].second, (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(expected[5].second, (std::vector<int64_t>{16, 16}));
  EXPECT_EQ(expected[9].second, (std::vector<int64_t>{16, 24}));
  EXPECT_EQ(expected.back().first, "lm_head.weight");
  config.tie_word_embeddings = true;
  EXPECT_EQ(ExpectedLlamaTensors(config).back().first, "model.norm.weight");
}

}  // namespace
}  // namespace dtm
