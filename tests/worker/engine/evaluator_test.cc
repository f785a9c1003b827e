#include "worker/engine/evaluator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "tests/worker/engine/test_models.h"
#include "worker/engine/calibration.h"
#include "worker/engine/compression.h"
#include "worker/engine/gptq.h"
#include "worker/engine/llama_model.h"

namespace dtm {
namespace {

using testing::RandomPrefixes;
using testing::SmallModel;

constexpr int64_t kPrefix = 6;
constexpr int64_t kCompletion = 30;

Baseline MakeBaseline(LlamaModel& model, int64_t probes) {
  return testing::RandomBaseline(model, probes, kPrefix, kCompletion, 11, 3);
}

CompressionConfig Config(const std::string& text) {
  StatusOr<CompressionConfig> config = ParseCompressionConfig(text, 2);
  EXPECT_TRUE(config.ok()) << config.status().ToString();
  return *config;
}

std::vector<torch::Tensor> Snapshot(const LlamaModel& model) {
  std::vector<torch::Tensor> out;
  for (const auto& [name, w] : model.NamedWeights()) out.push_back(w.clone());
  return out;
}

bool SameBits(const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].numel() != b[i].numel()) return false;
    if (std::memcmp(a[i].data_ptr(), b[i].data_ptr(), a[i].numel() * a[i].element_size()) != 0) return false;
  }
  return true;
}

CalibrationSequences CalibrationOf(const Baseline& baseline) { return testing::CalibrationOfBaseline(baseline); }

// The Hessian of one site of `layer`, over every calibration sequence in one forward of the model
// as it is: computed here without CalibrationHessians.
torch::Tensor HessianOf(LlamaModel& model, const CalibrationSequences& set, int layer, LinearInputSite site,
                        int64_t in_features) {
  HessianAccumulator acc(in_features, torch::kCPU);
  model.SetInputObserver([&](int l, LinearInputSite s, const torch::Tensor& x) {
    if (l == layer && s == site) acc.Add(x);
  });
  torch::NoGradGuard no_grad;
  std::vector<const std::vector<int32_t>*> rows;
  for (const auto& seq : set.sequences) rows.push_back(&seq);
  model.Forward(StackTokens(rows, set.seq_len));
  model.SetInputObserver(nullptr);
  return acc.hessian().clone();
}

// SPEC, gptq: layer 1's Hessians come from inputs that passed through layer 0 as the config
// compresses it, not from the uncompressed model.
TEST(EvaluatorTest, GptqQuantizesLayersInOrderWithHessiansThroughTheEarlierQuantizedLayers) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  const CalibrationSequences set = CalibrationOf(MakeBaseline(*model, 4));
  const LlamaConfig& c = model->config();
  const ComponentId q0{0, ComponentKind::kQ}, down1{1, ComponentKind::kDown};
  GptqOptions opts;
  opts.bits = 2;

  // By hand: q0 from the uncompressed model's Hessian, then down1 from the model with q0 quantized.
  const torch::Tensor q0_original = model->ComponentWeight(q0).clone();
  const torch::Tensor h0 = HessianOf(*model, set, 0, LinearInputSite::kAttentionIn, c.hidden_size);
  StatusOr<torch::Tensor> q0_quantized = GptqQuantize(q0_original, h0, opts);
  ASSERT_TRUE(q0_quantized.ok());
  const torch::Tensor h1_uncompressed = HessianOf(*model, set, 1, LinearInputSite::kMlpHidden, c.intermediate_size);
  {
    torch::NoGradGuard no_grad;
    model->ComponentWeight(q0).copy_(*q0_quantized);
  }
  const torch::Tensor h1 = HessianOf(*model, set, 1, LinearInputSite::kMlpHidden, c.intermediate_size);
  {
    torch::NoGradGuard no_grad;
    model->ComponentWeight(q0).copy_(q0_original);
  }
  ASSERT_FALSE(torch::equal(h1, h1_uncompressed));  // else this test could not tell the two apart
  StatusOr<torch::Tensor> down1_expected = GptqQuantize(model->ComponentWeight(down1), h1, opts);
  StatusOr<torch::Tensor> down1_from_uncompressed = GptqQuantize(model->ComponentWeight(down1), h1_uncompressed, opts);
  ASSERT_TRUE(down1_expected.ok() && down1_from_uncompressed.ok());
  ASSERT_FALSE(torch::equal(*down1_expected, *down1_from_uncompressed));

  CalibrationHessians hessians(set, 3);
  Evaluator evaluator(model.get(), &hessians);
  ASSERT_TRUE(evaluator.Apply(Config("model.layers.0.self_attn.q_proj=gptq:2,model.layers.1.mlp.down_proj=gptq:2")).ok());
  EXPECT_TRUE(torch::allclose(model->ComponentWeight(q0), *q0_quantized, 0, 1e-6));
  EXPECT_TRUE(torch::allclose(model->ComponentWeight(down1), *down1_expected, 0, 1e-6));
  EXPECT_EQ(hessians.passes(), 2);
  evaluator.Restore();
  // Alone, down1 is calibrated on the uncompressed model; layer 0's Hessian is reused from the cache.
  ASSERT_TRUE(evaluator.Apply(Config("model.layers.1.mlp.down_proj=gptq:2")).ok());
  EXPECT_TRUE(torch::allclose(model->ComponentWeight(down1), *down1_from_uncompressed, 0, 1e-6));
  ASSERT_TRUE(evaluator.Apply(Config("model.layers.0.self_attn.q_proj=gptq:2")).ok());
  EXPECT_EQ(hessians.passes(), 3);
}

TEST(EvaluatorTest, UncompressedModelNeverDivergesFromItsOwnBaseline) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  Baseline baseline = MakeBaseline(*model, 7);
  Evaluator evaluator(model.get(), nullptr);
  StatusOr<EvalResult> result = evaluator.Evaluate(baseline, CompressionConfig{}, EvalOptions{});
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->per_probe.size(), 7u);
  for (const ProbeDivergence& p : result->per_probe) {
    EXPECT_EQ(p.fdt, kCompletion);
    EXPECT_EQ(p.sdt, 0);
  }
  EXPECT_DOUBLE_EQ(result->summary.fdt75, kCompletion);
}

TEST(EvaluatorTest, RestoresEveryMethodBitExactly) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  Baseline baseline = MakeBaseline(*model, 4);
  CalibrationHessians hessians(CalibrationOf(baseline), 2);
  Evaluator evaluator(model.get(), &hessians);
  const std::vector<torch::Tensor> before = Snapshot(*model);
  StatusOr<EvalResult> reference = evaluator.Evaluate(baseline, CompressionConfig{}, EvalOptions{});
  ASSERT_TRUE(reference.ok());
  for (const char* spec :
       {"model.layers.0.self_attn.q_proj=prune:0.5", "model.layers.1.mlp.down_proj=random-prune:0.3:5",
        "model.layers.0.self_attn.k_proj=int8-absmax", "model.layers.1.self_attn.v_proj=int8-absmax-row",
        "model.layers.0.mlp.up_proj=llm-int8", "model.layers.1.self_attn.o_proj=gptq:4",
        "model.layers.0.mlp.gate_proj=gptq:3:g16,model.layers.0.self_attn.q_proj=prune:0.9"}) {
    StatusOr<EvalResult> r = evaluator.Evaluate(baseline, Config(spec), EvalOptions{});
    ASSERT_TRUE(r.ok()) << spec << ": " << r.status().ToString();
    EXPECT_TRUE(SameBits(before, Snapshot(*model))) << spec;
    // After restoring, the model evaluates exactly as before.
    StatusOr<EvalResult> again = evaluator.Evaluate(baseline, CompressionConfig{}, EvalOptions{});
    ASSERT_TRUE(again.ok());
    for (size_t i = 0; i < again->per_probe.size(); ++i) {
      EXPECT_EQ(again->per_probe[i].nll, reference->per_probe[i].nll) << spec;
    }
  }
}

TEST(EvaluatorTest, ApplyChangesOnlyTheConfiguredComponents) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  const std::vector<torch::Tensor> before = Snapshot(*model);
  Evaluator evaluator(model.get(), nullptr);
  ASSERT_TRUE(evaluator.Apply(Config("model.layers.1.mlp.up_proj=int8-absmax")).ok());
  const std::vector<torch::Tensor> after = Snapshot(*model);
  auto names = model->NamedWeights();
  for (size_t i = 0; i < names.size(); ++i) {
    const bool target = names[i].first == "model.layers.1.mlp.up_proj.weight";
    EXPECT_EQ(!torch::equal(before[i], after[i]), target) << names[i].first;
  }
  evaluator.Restore();
  EXPECT_TRUE(SameBits(before, Snapshot(*model)));
}

TEST(EvaluatorTest, EvaluationEqualsADirectForwardOfTheCompressedWeights) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  Baseline baseline = MakeBaseline(*model, 5);
  Evaluator evaluator(model.get(), nullptr);
  StatusOr<EvalResult> result =
      evaluator.Evaluate(baseline, Config("model.layers.0.mlp.down_proj=prune:0.7"), EvalOptions{});
  ASSERT_TRUE(result.ok());

  // Second code path: prune by hand, score each row alone, without the evaluator.
  torch::NoGradGuard no_grad;
  torch::Tensor& w = model->ComponentWeight({0, ComponentKind::kDown});
  torch::Tensor original = w.clone();
  w.copy_(MagnitudePrune(w, 0.7));
  for (size_t i = 0; i < baseline.rows.size(); ++i) {
    const BaselineRow& row = baseline.rows[i];
    torch::Tensor tokens = torch::tensor(std::vector<int64_t>(row.tokens.begin(), row.tokens.end())).unsqueeze(0);
    torch::Tensor logits = model->Logits(model->Forward(tokens))[0];
    int64_t fdt = kCompletion, sdt = 0;
    double nll = 0;
    for (int64_t k = 0; k < kCompletion; ++k) {
      torch::Tensor position = logits[row.prefix_len - 1 + k];
      const int64_t target = row.tokens[row.prefix_len + k];
      if (position.argmax().item<int64_t>() != target) {
        ++sdt;
        fdt = std::min(fdt, k);
      }
      nll -= torch::log_softmax(position.to(torch::kFloat64), 0)[target].item<double>();
    }
    EXPECT_EQ(result->per_probe[i].fdt, fdt) << row.id;
    EXPECT_EQ(result->per_probe[i].sdt, sdt) << row.id;
    EXPECT_NEAR(result->per_probe[i].nll, nll / kCompletion, 1e-5) << row.id;
  }
  w.copy_(original);
}

TEST(EvaluatorTest, HeavyCompressionDivergesAndTheResultsDoNotDependOnBatchSize) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  Baseline baseline = MakeBaseline(*model, 6);
  Evaluator evaluator(model.get(), nullptr);
  CompressionConfig config = Config("model.layers.0.self_attn.v_proj=prune:1,model.layers.0.mlp.up_proj=llm-int8");
  EvalOptions one, four;
  one.batch_size = 1;
  four.batch_size = 4;
  StatusOr<EvalResult> a = evaluator.Evaluate(baseline, config, one);
  StatusOr<EvalResult> b = evaluator.Evaluate(baseline, config, four);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_LT(a->summary.fdt_mean, kCompletion);
  EXPECT_EQ(a->outlier_columns, b->outlier_columns);
  for (size_t i = 0; i < a->per_probe.size(); ++i) {
    EXPECT_EQ(a->per_probe[i].fdt, b->per_probe[i].fdt);
    EXPECT_EQ(a->per_probe[i].sdt, b->per_probe[i].sdt);
    EXPECT_NEAR(a->per_probe[i].nll, b->per_probe[i].nll, 1e-5);
  }
}

// Counts the columns j of x [1, T, in] with some |x[0, t, j]| >= 6, by a loop over the values.
int64_t OutlierColumnsByLoop(const torch::Tensor& x) {
  torch::Tensor c = x.to(torch::kCPU, torch::kFloat32).contiguous();
  const int64_t t_len = c.size(1), in = c.size(2);
  const float* v = c.data_ptr<float>();
  int64_t columns = 0;
  for (int64_t j = 0; j < in; ++j) {
    bool outlier = false;
    for (int64_t t = 0; t < t_len && !outlier; ++t) outlier = std::fabs(v[t * in + j]) >= 6.0f;
    columns += outlier;
  }
  return columns;
}

TEST(EvaluatorTest, CountsTheOutlierColumnsOfEachProbeOverItsLlmInt8Components) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  Baseline baseline = MakeBaseline(*model, 5);
  Evaluator evaluator(model.get(), nullptr);
  // down_proj's input (SwiGLU's hidden) of the x10 weights has values past 6; two components, so
  // that the count sums over them, the second seeing the first's LLM.int8() output.
  CompressionConfig config =
      Config("model.layers.0.mlp.down_proj=llm-int8,model.layers.1.mlp.down_proj=llm-int8,"
             "model.layers.1.self_attn.q_proj=int8-absmax");
  EvalOptions batched;
  batched.batch_size = 3;
  StatusOr<EvalResult> result = evaluator.Evaluate(baseline, config, batched);
  ASSERT_TRUE(result.ok()) << result.status().ToString();
  ASSERT_EQ(result->outlier_columns.size(), baseline.rows.size());

  // Second code path: the same config applied, each probe forwarded alone, down_proj's inputs seen by
  // an input observer and their outlier columns counted by a loop.
  ASSERT_TRUE(evaluator.Apply(config).ok());
  int64_t seen = 0;
  model->SetInputObserver([&](int, LinearInputSite site, const torch::Tensor& x) {
    if (site == LinearInputSite::kMlpHidden) seen += OutlierColumnsByLoop(x);
  });
  const int64_t hidden = model->config().intermediate_size;
  double sum = 0;
  bool some_but_not_all = false;
  for (size_t i = 0; i < baseline.rows.size(); ++i) {
    const BaselineRow& row = baseline.rows[i];
    seen = 0;
    torch::NoGradGuard no_grad;
    model->Forward(torch::tensor(std::vector<int64_t>(row.tokens.begin(), row.tokens.end())).unsqueeze(0));
    EXPECT_EQ(result->outlier_columns[i], seen) << row.id;
    sum += static_cast<double>(seen);
    some_but_not_all |= seen > 0 && seen < 2 * hidden;
  }
  model->SetInputObserver(nullptr);
  evaluator.Restore();
  EXPECT_TRUE(some_but_not_all) << "the test model should give a count that is neither 0 nor every column";
  EXPECT_DOUBLE_EQ(result->outlier_columns_mean, sum / static_cast<double>(baseline.rows.size()));

  // Without llm-int8 components every count is 0.
  StatusOr<EvalResult> plain =
      evaluator.Evaluate(baseline, Config("model.layers.0.mlp.down_proj=int8-absmax"), batched);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(plain->outlier_columns, std::vector<int64_t>(baseline.rows.size(), 0));
  EXPECT_EQ(plain->outlier_columns_mean, 0.0);
}

TEST(EvaluatorTest, GptqWithoutCalibrationIsAClearError) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  Baseline baseline = MakeBaseline(*model, 2);
  Evaluator evaluator(model.get(), nullptr);
  StatusOr<EvalResult> r = evaluator.Evaluate(baseline, Config("model.layers.0.mlp.up_proj=gptq:4"), EvalOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("calibration"), std::string::npos);
}

TEST(EvaluatorTest, RejectsABaselineBeyondTheModelsContextOrVocabulary) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  Evaluator evaluator(model.get(), nullptr);
  Baseline too_long{{BaselineRow{"long", 10, std::vector<int32_t>(129, 5)}}};
  StatusOr<EvalResult> r = evaluator.EvaluateCurrent(too_long, EvalOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("context"), std::string::npos) << r.status().message();
  Baseline bad_token{{BaselineRow{"tok", 2, {1, 2, 3, 97}}}};
  r = evaluator.EvaluateCurrent(bad_token, EvalOptions{});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("vocabulary"), std::string::npos) << r.status().message();
}

TEST(EvaluatorTest, PerplexityOfTheModelsOwnGreedyTextIsLow) {
  std::unique_ptr<LlamaModel> model = SmallModel();
  Baseline baseline = MakeBaseline(*model, 4);
  ProbeSet windows;
  for (const BaselineRow& row : baseline.rows) windows.probes.push_back({row.id, row.tokens});
  Evaluator evaluator(model.get(), nullptr);
  StatusOr<PerplexityResult> ppl = evaluator.Perplexity(windows, kPrefix, EvalOptions{});
  ASSERT_TRUE(ppl.ok());
  EXPECT_EQ(ppl->tokens_scored, 4 * kCompletion);
  StatusOr<EvalResult> eval = evaluator.EvaluateCurrent(baseline, EvalOptions{});
  // Equal completion lengths: ppl = exp(mean nll).
  EXPECT_NEAR(ppl->ppl, std::exp(eval->summary.nll_mean), 1e-9);
  EXPECT_LT(ppl->ppl, 97.0);
}

}  // namespace
}  // namespace dtm
