// compressed-tensors: packing against the format's own worked example and hand-computed words, the
// integer codes of AbsMax and GPTQ against the float weights they produce, the writer's tensors read
// back by the reader, and a checkpoint folder opened, dequantized and refused where dtm cannot read it.
#include "worker/engine/compressed_tensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/jsonl.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/compression.h"
#include "worker/engine/gptq.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;
using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

torch::Tensor Codes(std::vector<int64_t> values, int64_t rows, int64_t cols) {
  return torch::tensor(values, torch::kInt64).reshape({rows, cols}).to(torch::kInt8);
}

bool BitIdentical(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes() || a.scalar_type() != b.scalar_type()) return false;
  torch::Tensor x = a.contiguous(), y = b.contiguous();
  return std::memcmp(x.data_ptr(), y.data_ptr(), x.numel() * x.element_size()) == 0;
}

// -- packing ------------------------------------------------------------------------------------

TEST(PackToInt32Test, TheFormatsWorkedExample) {
  // pack_to_int32's docstring: 8 bits, [1, 2] -> unsigned [129, 130] -> 0x00008281 = 33409.
  torch::Tensor packed = PackToInt32(Codes({1, 2}, 1, 2), 8, 1);
  ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(packed.scalar_type(), torch::kInt32);
  EXPECT_EQ(packed[0][0].item<int32_t>(), 33409);
}

TEST(PackToInt32Test, FourBitWordsByHand) {
  // Codes -8..7 are unsigned 0..15; eight per word, the first in the lowest bits.
  std::vector<int64_t> v;
  for (int64_t c = -8; c <= 7; ++c) v.push_back(c);
  torch::Tensor packed = PackToInt32(Codes(v, 1, 16), 4, 1);
  ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(packed[0][0].item<int32_t>(), 0x76543210);
  EXPECT_EQ(packed[0][1].item<int32_t>(), static_cast<int32_t>(0xFEDCBA98u));  // the top bit set: negative
  // Padding: three codes [-8, 0, 7] = unsigned [0, 8, 15] -> 8 << 4 | 15 << 8 = 0xF80.
  EXPECT_EQ(PackToInt32(Codes({-8, 0, 7}, 1, 3), 4, 1)[0][0].item<int32_t>(), 0xF80);
}

TEST(PackToInt32Test, ZeroPointsPackAlongRows) {
  // packed_dim 0: a column of 3 four-bit zero points [1, -1, 2] = unsigned [9, 7, 10] in one word.
  torch::Tensor packed = PackToInt32(Codes({1, -1, 2}, 3, 1), 4, 0);
  ASSERT_EQ(packed.sizes(), (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(packed[0][0].item<int32_t>(), 9 | 7 << 4 | 10 << 8);
}

TEST(PackToInt32Test, RoundTripsEveryWidthAndDimension) {
  torch::manual_seed(3);
  for (int bits : {2, 3, 4, 8}) {
    const int64_t lo = -(int64_t{1} << (bits - 1)), hi = (int64_t{1} << (bits - 1)) - 1;
    torch::Tensor codes = torch::randint(lo, hi + 1, {5, 13}, torch::kInt64).to(torch::kInt8);
    for (int dim : {0, 1}) {
      SCOPED_TRACE("bits " + std::to_string(bits) + " dim " + std::to_string(dim));
      torch::Tensor packed = PackToInt32(codes, bits, dim);
      const int64_t factor = 32 / bits;
      const std::vector<int64_t> want = dim == 1 ? std::vector<int64_t>{5, (13 + factor - 1) / factor}
                                                 : std::vector<int64_t>{(5 + factor - 1) / factor, 13};
      EXPECT_EQ(packed.sizes(), want);
      torch::Tensor back = UnpackFromInt32(packed, bits, 5, 13, dim);
      EXPECT_TRUE(torch::equal(back, codes.to(torch::kInt32)));
    }
  }
}

// -- the codes the methods compute ---------------------------------------------------------------

TEST(IntegerCodesTest, AbsMaxByHand) {
  torch::Tensor w = torch::tensor({1.0f, -2.0f, 0.5f, 4.0f}).reshape({2, 2});
  IntegerWeight t = AbsMaxInt8Codes(w);
  EXPECT_EQ(t.granularity, QuantGranularity::kTensor);
  ASSERT_EQ(t.scale.sizes(), (std::vector<int64_t>{1}));
  EXPECT_EQ(t.scale.item<float>(), 4.0f / 127.0f);
  // round(w / (4/127)): 31.75 -> 32, -63.5 -> -64 (half to even), 15.875 -> 16, 127.
  EXPECT_TRUE(torch::equal(t.q, torch::tensor({32, -64, 16, 127}, torch::kInt8).reshape({2, 2})));
  IntegerWeight r = AbsMaxInt8RowsCodes(w);
  ASSERT_EQ(r.scale.sizes(), (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(r.q[0][1].item<int8_t>(), -127);
  EXPECT_EQ(r.q[1][1].item<int8_t>(), 127);
  // The float weights eval uses are these codes dequantized, also for an all-zero row.
  torch::Tensor z = torch::cat({w, torch::zeros({1, 2})});
  EXPECT_TRUE(BitIdentical(AbsMaxInt8Rows(z), AbsMaxInt8RowsCodes(z).Dequantize()));
  EXPECT_EQ(AbsMaxInt8RowsCodes(z).Dequantize()[2].abs().sum().item<float>(), 0.0f);
}

TEST(IntegerCodesTest, GptqCodesDequantizeToItsWeightsBitForBit) {
  torch::manual_seed(5);
  const int64_t out = 6, in = 20;
  torch::Tensor w = torch::randn({out, in});
  torch::Tensor x = torch::randn({64, in});
  torch::Tensor h = 2.0 * x.t().matmul(x) / 64;
  for (int bits : {2, 3, 4, 8}) {
    for (int group : {0, 4, 8}) {  // 8 leaves a partial last group of 4
      for (bool symmetric : {false, true}) {
        SCOPED_TRACE("bits " + std::to_string(bits) + " group " + std::to_string(group) + (symmetric ? " sym" : ""));
        GptqOptions opts;
        opts.bits = bits;
        opts.group_size = group;
        opts.symmetric = symmetric;
        opts.block_size = 7;
        StatusOr<GptqResult> r = GptqQuantizeWithCodes(w, h, opts);
        ASSERT_TRUE(r.ok()) << r.status().ToString();
        StatusOr<torch::Tensor> plain = GptqQuantize(w, h, opts);
        ASSERT_TRUE(plain.ok());
        EXPECT_TRUE(BitIdentical(r->dequantized, *plain));
        EXPECT_TRUE(BitIdentical(r->codes.Dequantize(), *plain));
        const int64_t lo = -(int64_t{1} << (bits - 1)), hi = (int64_t{1} << (bits - 1)) - 1;
        EXPECT_GE(r->codes.q.min().item<int64_t>(), lo);
        EXPECT_LE(r->codes.q.max().item<int64_t>(), hi);
        EXPECT_EQ(r->codes.scale.size(1), group == 0 ? 1 : (in + group - 1) / group);
        EXPECT_EQ(r->codes.zero.defined(), !symmetric);
      }
    }
  }
}

// -- writer and reader ---------------------------------------------------------------------------

// The stored tensors of one module as an in-memory checkpoint.
class MemoryTensors {
 public:
  explicit MemoryTensors(const NamedTensors& tensors) {
    for (const auto& [name, t] : tensors) {
      tensors_[name] = t;
      SafetensorsTensorInfo info;
      info.name = name;
      info.shape = t.sizes().vec();
      info.dtype = t.scalar_type() == torch::kInt8    ? SafetensorsDType::kI8
                   : t.scalar_type() == torch::kInt32 ? SafetensorsDType::kI32
                   : t.scalar_type() == torch::kInt64 ? SafetensorsDType::kI64
                                                      : SafetensorsDType::kF32;
      infos_[name] = info;
    }
  }
  StoredTensors Stored() const {
    return {[this](const std::string& n) { return infos_.count(n) ? &infos_.at(n) : nullptr; },
            [this](const std::string& n) -> StatusOr<torch::Tensor> { return tensors_.at(n).clone(); }};
  }

 private:
  std::map<std::string, torch::Tensor> tensors_;
  std::map<std::string, SafetensorsTensorInfo> infos_;
};

TEST(CompressedTensorsTest, WhatIsWrittenReadsBackBitForBit) {
  torch::manual_seed(11);
  const int64_t out = 10, in = 24;
  torch::Tensor w = torch::randn({out, in});
  torch::Tensor x = torch::randn({50, in});
  torch::Tensor h = 2.0 * x.t().matmul(x) / 50;
  std::vector<std::pair<std::string, IntegerWeight>> cases = {{"a.q_proj", AbsMaxInt8Codes(w)},
                                                              {"a.k_proj", AbsMaxInt8RowsCodes(w)}};
  for (auto [bits, group] : std::vector<std::pair<int, int>>{{4, 8}, {8, 0}, {3, 12}, {4, 0}}) {
    GptqOptions opts;
    opts.bits = bits;
    opts.group_size = group;
    cases.emplace_back("b" + std::to_string(bits) + "g" + std::to_string(group),
                       GptqQuantizeWithCodes(w, h, opts)->codes);
  }
  for (const auto& [module, codes] : cases) {
    SCOPED_TRACE(module);
    NamedTensors stored = CompressedTensorsOf(module, codes);
    const CtWeightScheme scheme = ExportScheme(codes);
    // As compressed-tensors picks a weight-only format: packing for 4 and 8 bits only.
    EXPECT_EQ(scheme.format, codes.bits == 3 ? CtFormat::kNaiveQuantized : CtFormat::kPackQuantized);
    nlohmann::json config = QuantizationConfigJson({{scheme, {module}}}, {"lm_head"});
    StatusOr<std::unique_ptr<CompressedTensorsLayout>> layout =
        CompressedTensorsLayout::Parse(config, {module, "lm_head"}, "config.json");
    ASSERT_TRUE(layout.ok()) << layout.status().ToString();
    ASSERT_NE((*layout)->SchemeOf(module), nullptr);
    EXPECT_TRUE(*(*layout)->SchemeOf(module) == scheme);
    EXPECT_EQ((*layout)->SchemeOf("lm_head"), nullptr);
    MemoryTensors memory(stored);
    StatusOr<torch::Tensor> dense = (*layout)->Dequantize(module, out, in, memory.Stored());
    ASSERT_TRUE(dense.ok()) << dense.status().ToString();
    EXPECT_TRUE(BitIdentical(*dense, codes.Dequantize()));
  }
}

TEST(CompressedTensorsTest, AGroupThatDoesNotDivideIsRefusedForExport) {
  EXPECT_TRUE(CheckExportable("m", QuantGranularity::kGroup, 64, 128).ok());
  Status s = CheckExportable("model.layers.0.mlp.down_proj=gptq:4:g100", QuantGranularity::kGroup, 100, 384);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("model.layers.0.mlp.down_proj"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("384"), std::string::npos) << s.message();
  EXPECT_TRUE(CheckExportable("m", QuantGranularity::kChannel, 0, 7).ok());
}

// -- a checkpoint folder -------------------------------------------------------------------------

LlamaConfig TinyConfig() {
  LlamaConfig c;
  c.vocab_size = 32;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  return c;
}

class CompressedCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = (fs::temp_directory_path() / ("dtm_ct_test_" + std::to_string(::getpid()) + "_" + info->name())).string();
    fs::remove_all(dir_);
    torch::manual_seed(2);
    for (const auto& [name, shape] : ExpectedLlamaTensors(TinyConfig())) dense_.push_back({name, torch::randn(shape)});
    // Two quantized modules: int8 per channel and 4-bit groups of 8 (GPTQ on an identity Hessian).
    GptqOptions opts;
    opts.bits = 4;
    opts.group_size = 8;
    for (const auto& [name, t] : dense_) {
      if (name == "model.layers.0.mlp.down_proj.weight") {
        codes_["model.layers.0.mlp.down_proj"] = AbsMaxInt8RowsCodes(t);
      } else if (name == "model.layers.1.self_attn.q_proj.weight") {
        codes_["model.layers.1.self_attn.q_proj"] = GptqQuantizeWithCodes(t, torch::eye(t.size(1)), opts)->codes;
      }
    }
    std::vector<std::pair<CtWeightScheme, std::vector<std::string>>> groups;
    for (const auto& [module, codes] : codes_) groups.push_back({ExportScheme(codes), {module}});
    quantization_ = QuantizationConfigJson(groups, {"lm_head"});
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes the folder with `quantization` as config.json's quantization_config; `edit` may change
  // the stored tensors first.
  void Write(const nlohmann::json& quantization,
             const std::function<void(NamedTensors&)>& edit = nullptr) {
    NamedTensors stored;
    for (const auto& [name, t] : dense_) {
      const std::string module = name.substr(0, name.size() - 7);
      if (codes_.count(module)) {
        for (auto& part : CompressedTensorsOf(module, codes_.at(module))) stored.push_back(part);
      } else {
        stored.push_back({name, t});
      }
    }
    if (edit) edit(stored);
    fs::remove_all(dir_);
    ASSERT_TRUE(WriteCheckpoint(dir_, TinyConfig(), stored).ok());
    StatusOr<nlohmann::json> config = ReadJsonFile(dir_ + "/config.json");
    ASSERT_TRUE(config.ok());
    (*config)["quantization_config"] = quantization;
    ASSERT_TRUE(WriteTextFile(dir_ + "/config.json", config->dump(2)).ok());
  }
  Status OpenError(const nlohmann::json& quantization, const std::function<void(NamedTensors&)>& edit = nullptr) {
    Write(quantization, edit);
    StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_);
    return c.ok() ? OkStatus() : c.status();
  }

  std::string dir_;
  NamedTensors dense_;
  std::map<std::string, IntegerWeight> codes_;
  nlohmann::json quantization_;
};

TEST_F(CompressedCheckpointTest, OpensAndLoadsDequantizedWeights) {
  Write(quantization_);
  StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const Checkpoint& checkpoint = **c;
  ASSERT_NE(checkpoint.quantization(), nullptr);
  EXPECT_EQ(checkpoint.quantization()->modules().size(), 2u);
  for (const auto& [name, t] : dense_) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(checkpoint.Has(name));
    StatusOr<torch::Tensor> loaded = checkpoint.Load(name, t.sizes().vec(), torch::kFloat32, torch::kCPU);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    const std::string module = name.substr(0, name.size() - 7);
    EXPECT_TRUE(BitIdentical(*loaded, codes_.count(module) ? codes_.at(module).Dequantize() : t));
  }
  EXPECT_EQ(checkpoint.Find("model.layers.1.self_attn.q_proj.weight"), nullptr);
  EXPECT_NE(checkpoint.Find("model.layers.1.self_attn.q_proj.weight_packed"), nullptr);
  EXPECT_TRUE(checkpoint.quantization()->OwnsTensor("model.layers.1.self_attn.q_proj.weight_zero_point"));
  EXPECT_FALSE(checkpoint.quantization()->OwnsTensor("model.layers.1.self_attn.k_proj.weight"));
}

TEST_F(CompressedCheckpointTest, TargetsByPatternAndClassWithIgnore) {
  // All int8 per channel: "Linear" everywhere but what ignore names, by name and by pattern.
  for (const auto& [name, t] : dense_) {
    if (t.dim() == 2 && name.find("_proj") != std::string::npos) {
      codes_[name.substr(0, name.size() - 7)] = AbsMaxInt8RowsCodes(t);
    }
  }
  codes_.erase("model.layers.1.self_attn.q_proj");
  nlohmann::json q = QuantizationConfigJson({{ExportScheme(codes_.begin()->second), {"Linear"}}},
                                            {"lm_head", "re:.*self_attn\\.q_proj$"});
  codes_.erase("model.layers.0.self_attn.q_proj");
  Write(q);  // the q_proj weights dense, as ignore says
  StatusOr<std::unique_ptr<Checkpoint>> c = Checkpoint::Open(dir_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ((*c)->quantization()->modules().size(), 12u);  // 2 layers x 7, minus the two q_proj
  EXPECT_EQ((*c)->quantization()->SchemeOf("model.layers.0.self_attn.q_proj"), nullptr);
  EXPECT_NE((*c)->quantization()->SchemeOf("model.layers.0.self_attn.k_proj"), nullptr);
}

TEST_F(CompressedCheckpointTest, RefusesWhatItCannotRead) {
  auto expect = [&](Status s, StatusCode code, const std::string& needle) {
    EXPECT_EQ(s.code(), code) << s.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
  };
  nlohmann::json q = quantization_;
  q["config_groups"]["group_0"]["input_activations"] = {{"num_bits", 8}, {"type", "int"}, {"strategy", "token"}};
  expect(OpenError(q), StatusCode::kUnimplemented, "group_0.input_activations");

  q = quantization_;
  q["quant_method"] = "gptq";
  expect(OpenError(q), StatusCode::kUnimplemented, "quant_method");

  q = quantization_;
  q["sparsity_config"] = {{"format", "sparse-bitmask"}};
  expect(OpenError(q), StatusCode::kUnimplemented, "sparsity_config");

  q = quantization_;
  q["config_groups"]["group_1"]["targets"].push_back("model.layers.0.mlp.down_proj");
  expect(OpenError(q), StatusCode::kInvalidArgument, "model.layers.0.mlp.down_proj is targeted by both");

  q = quantization_;
  q["config_groups"]["group_0"]["targets"] = {"Embedding"};
  expect(OpenError(q), StatusCode::kUnimplemented, "'Embedding'");

  q = quantization_;
  q["config_groups"]["group_0"]["targets"] = {"re:(unclosed"};
  expect(OpenError(q), StatusCode::kInvalidArgument, "'(unclosed': missing ')'");

  q = quantization_;
  q["ignore"] = {"re:.*_proj{2}"};
  expect(OpenError(q), StatusCode::kUnimplemented, "ignore: target '.*_proj{2}': counted repetition");

  expect(OpenError(quantization_, [](NamedTensors& t) {
           const std::string scale = "model.layers.1.self_attn.q_proj.weight_scale";
           t.erase(std::remove_if(t.begin(), t.end(), [&](const auto& e) { return e.first == scale; }), t.end());
         }),
         StatusCode::kNotFound, "model.layers.1.self_attn.q_proj.weight_scale");

  expect(OpenError(quantization_, [](NamedTensors& t) {
           for (auto& [name, tensor] : t) {
             if (name == "model.layers.1.self_attn.q_proj.weight_shape") {
               tensor = torch::tensor({16, 15}, torch::kInt64);
             }
           }
         }),
         StatusCode::kInvalidArgument, "weight_shape' says [16, 15]");

  expect(OpenError(quantization_, [](NamedTensors& t) {
           t.push_back({"model.layers.1.self_attn.q_proj.weight_g_idx", torch::zeros({16}, torch::kInt32)});
         }),
         StatusCode::kUnimplemented, "weight_g_idx");

  expect(OpenError(quantization_, [](NamedTensors& t) {
           for (auto& [name, tensor] : t) {
             if (name == "model.layers.0.mlp.down_proj.weight_packed") tensor = tensor.to(torch::kInt64);
           }
         }),
         StatusCode::kInvalidArgument, "has dtype I64, expected I32");
}

}  // namespace
}  // namespace dtm
