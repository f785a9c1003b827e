// Reused residual streams (worker/engine/activation_cache.h) must give exactly what a full forward
// gives, for every method, whatever the cache holds, evicts or is told about a config's parent.
#include "worker/engine/activation_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "tests/worker/engine/test_models.h"
#include "worker/engine/baseline.h"
#include "worker/engine/calibration.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/llama_model.h"

namespace dtm {
namespace {

using testing::SmallConfig;
using testing::SmallModel;

CachedStream Stream(int64_t elements) { return {torch::zeros({elements}, torch::kFloat32), torch::Tensor()}; }

TEST(ActivationCacheTest, EvictsTheLeastRecentlyUsedToStayWithinItsBudget) {
  ActivationCache cache(3 * 400);  // three streams of 100 floats
  EXPECT_TRUE(cache.Put("a", Stream(100)));
  EXPECT_TRUE(cache.Put("b", Stream(100)));
  EXPECT_TRUE(cache.Put("c", Stream(100)));
  ASSERT_NE(cache.Find("a"), nullptr);  // a is now the most recent; b the least
  EXPECT_TRUE(cache.Put("d", Stream(100)));
  EXPECT_EQ(cache.bytes(), 1200);
  EXPECT_EQ(cache.size(), 3u);
  EXPECT_FALSE(cache.Contains("b"));
  EXPECT_TRUE(cache.Contains("a"));
  EXPECT_EQ(cache.evictions(), 1);
  // A stream of 150 floats needs the two least recent places (order now: d, a, c).
  EXPECT_TRUE(cache.Put("e", Stream(150)));
  EXPECT_EQ(cache.bytes(), 1000);
  EXPECT_FALSE(cache.Contains("c"));
  EXPECT_FALSE(cache.Contains("a"));
  EXPECT_TRUE(cache.Contains("d"));
  EXPECT_TRUE(cache.Contains("e"));
  EXPECT_EQ(cache.evictions(), 3);
}

TEST(ActivationCacheTest, NeverKeepsAStreamLargerThanTheBudgetAndReplacesAKeyInPlace) {
  ActivationCache cache(1000);
  EXPECT_TRUE(cache.Put("a", Stream(100)));
  EXPECT_FALSE(cache.Put("huge", Stream(1000)));
  EXPECT_TRUE(cache.Contains("a"));  // nothing was evicted for a stream that could never fit
  EXPECT_TRUE(cache.Put("a", Stream(200)));
  EXPECT_EQ(cache.bytes(), 800);
  EXPECT_EQ(cache.size(), 1u);
  ActivationCache none(0);
  EXPECT_FALSE(none.Put("a", Stream(1)));
  EXPECT_EQ(none.bytes(), 0);
}

TEST(ActivationCacheTest, CountsEachGroupsStreamsThroughEvictionAndReplacement) {
  ActivationCache cache(3 * 400);
  cache.Put("s1/a", Stream(100), "s1");
  cache.Put("s1/b", Stream(100), "s1");
  cache.Put("s2/a", Stream(100), "s2");
  EXPECT_EQ(cache.StreamsOf("s1"), 2);
  EXPECT_EQ(cache.StreamsOf("s2"), 1);
  cache.Put("s1/a", Stream(100), "s1");  // replaced, not added
  EXPECT_EQ(cache.StreamsOf("s1"), 2);
  cache.Put("s3/a", Stream(100), "s3");  // evicts s1/b, the least recent
  EXPECT_EQ(cache.StreamsOf("s1"), 1);
  cache.Put("s3/b", Stream(200), "s3");  // evicts s2/a and s1/a
  EXPECT_EQ(cache.StreamsOf("s1"), 0);
  EXPECT_EQ(cache.StreamsOf("s2"), 0);
  EXPECT_EQ(cache.StreamsOf("s3"), 2);
  cache.Clear();
  EXPECT_EQ(cache.StreamsOf("s3"), 0);
  EXPECT_EQ(cache.bytes(), 0);
}

TEST(ActivationCacheTest, FindFirstCountsOneHitOrOneMissPerLookup) {
  ActivationCache cache(10000);
  cache.Put("layer2", Stream(10));
  int found = -1;
  const auto key = [](int layer) { return "layer" + std::to_string(layer); };
  EXPECT_NE(cache.FindFirst({4, 3, 2, 1}, key, &found), nullptr);
  EXPECT_EQ(found, 2);
  EXPECT_EQ(cache.FindFirst({1}, key, &found), nullptr);
  EXPECT_EQ(found, 0);
  EXPECT_EQ(cache.hits(), 1);
  EXPECT_EQ(cache.misses(), 1);
}

// -- reuse in the evaluator

constexpr int64_t kPrefix = 5;
constexpr int64_t kCompletion = 24;

Baseline MakeBaseline(LlamaModel& model, int64_t probes, uint64_t seed) {
  return testing::RandomBaseline(model, probes, kPrefix, kCompletion, seed, 4);
}

CompressionConfig Parse(const std::string& text, int layers) {
  StatusOr<CompressionConfig> config = ParseCompressionConfig(text, layers);
  EXPECT_TRUE(config.ok()) << text << ": " << config.status().ToString();
  return config.ok() ? *config : CompressionConfig();
}

// Evaluates configs twice on one model: once with full forwards (no cache), once through a cache,
// and compares every probe. NLL may differ by float rounding only if the forward differed at all;
// the tolerance is the (1e-6 relative), and in practice the bits are equal.
class ReuseChecker {
 public:
  ReuseChecker(LlamaModel* model, const Baseline& calibration_rows, int64_t budget, int every, int64_t batch_size)
      : model_(model),
        full_calibration_(testing::CalibrationOfBaseline(calibration_rows), batch_size),
        reuse_calibration_(testing::CalibrationOfBaseline(calibration_rows), batch_size),
        full_(model, &full_calibration_),
        reuse_(model, &reuse_calibration_),
        cache_(budget) {
    reuse_.SetActivationCache(&cache_, every);
    options_.batch_size = batch_size;
  }

  // The reused evaluation's result, after checking it against the full one.
  EvalResult Check(const Baseline& baseline, const std::string& config_text, const std::string& parent_text = "") {
    const int layers = static_cast<int>(model_->config().num_hidden_layers);
    const CompressionConfig config = Parse(config_text, layers);
    EvalOptions full_options = options_;
    StatusOr<EvalResult> full = full_.Evaluate(baseline, config, full_options);
    EvalOptions reuse_options = options_;
    reuse_options.parent = Parse(parent_text, layers);
    StatusOr<EvalResult> reused = reuse_.Evaluate(baseline, config, reuse_options);
    EXPECT_TRUE(full.ok()) << full.status().ToString();
    EXPECT_TRUE(reused.ok()) << reused.status().ToString();
    if (!full.ok() || !reused.ok()) return EvalResult();
    const std::string where = "config '" + config_text + "' (parent '" + parent_text + "')";
    EXPECT_EQ(full->layer_forwards, full->full_layer_forwards) << where;
    EXPECT_EQ(reused->full_layer_forwards, full->full_layer_forwards) << where;
    EXPECT_LE(reused->layer_forwards, reused->full_layer_forwards) << where;
    EXPECT_LE(cache_.bytes(), cache_.budget()) << where;
    EXPECT_EQ(reused->per_probe.size(), full->per_probe.size()) << where;
    for (size_t i = 0; i < full->per_probe.size() && i < reused->per_probe.size(); ++i) {
      const ProbeDivergence& a = full->per_probe[i];
      const ProbeDivergence& b = reused->per_probe[i];
      EXPECT_EQ(b.fdt, a.fdt) << where << " probe " << i;
      EXPECT_EQ(b.sdt, a.sdt) << where << " probe " << i;
      EXPECT_LE(std::abs(b.nll - a.nll), 1e-6 * std::max(1.0, std::abs(a.nll))) << where << " probe " << i;
      EXPECT_EQ(reused->outlier_columns[i], full->outlier_columns[i]) << where << " probe " << i;
      bit_equal_nll_ = bit_equal_nll_ && b.nll == a.nll;
    }
    ++checked_;
    return *reused;
  }

  ActivationCache& cache() { return cache_; }
  int checked() const { return checked_; }
  bool bit_equal_nll() const { return bit_equal_nll_; }

 private:
  LlamaModel* model_;
  CalibrationHessians full_calibration_;
  CalibrationHessians reuse_calibration_;
  Evaluator full_;
  Evaluator reuse_;
  ActivationCache cache_;
  EvalOptions options_;
  int checked_ = 0;
  bool bit_equal_nll_ = true;
};

// 4 layers, grouped-query attention: every method on components spread over the layers, as a probe
// job orders them (top first, so that the uncompressed streams fill as it goes), then a search's
// children of parents holding llm-int8 (outlier counts below the stream) and gptq (calibrated
// weights below it).
std::unique_ptr<LlamaModel> FourLayerModel() {
  LlamaConfig c = SmallConfig();
  c.num_hidden_layers = 4;
  return SmallModel(c, 13);
}

const std::vector<std::string>& Methods() {
  static const std::vector<std::string> kMethods = {"prune:0.5", "random-prune:0.3:7", "int8-absmax", "int8-absmax-row",
                                                    "llm-int8",  "gptq:4:g16",         "gptq:8"};
  return kMethods;
}

std::string Component(int layer, const std::string& kind) { return "model.layers." + std::to_string(layer) + "." + kind; }

TEST(ActivationReuseTest, EveryMethodOnEveryLayerEqualsAFullForward) {
  std::unique_ptr<LlamaModel> model = FourLayerModel();
  const Baseline baseline = MakeBaseline(*model, 5, 3);  // batches of 2, 2, 1
  ReuseChecker check(model.get(), baseline, int64_t{1} << 30, 1, 2);
  const std::vector<std::string> kinds = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                          "self_attn.o_proj", "mlp.gate_proj",    "mlp.up_proj",
                                          "mlp.down_proj"};
  int position = 0;
  for (const std::string& method : Methods()) {
    for (int layer = 3; layer >= 0; --layer) {
      const std::string& kind = kinds[static_cast<size_t>(position++) % kinds.size()];
      check.Check(baseline, Component(layer, kind) + "=" + method);
    }
  }
  EXPECT_EQ(check.checked(), 28);
  EXPECT_GT(check.cache().hits(), 0);
  // Some of the configs' outlier columns are not zero, so that counting them below a stream is tested.
  EvalResult with_outliers = check.Check(baseline, Component(0, "mlp.down_proj") + "=llm-int8");
  EXPECT_GT(with_outliers.outlier_columns_mean, 0);
  EXPECT_TRUE(check.bit_equal_nll());
}

TEST(ActivationReuseTest, AConfigStartsAtItsLowestLayerOnceTheUncompressedStreamsAreKept) {
  std::unique_ptr<LlamaModel> model = FourLayerModel();
  const Baseline baseline = MakeBaseline(*model, 4, 5);
  ReuseChecker check(model.get(), baseline, int64_t{1} << 30, 1, 4);
  // The uncompressed model keeps every layer's stream (it differs from its parent nowhere).
  EvalResult uncompressed = check.Check(baseline, "");
  EXPECT_EQ(uncompressed.layer_forwards, 4 * 4);
  EXPECT_EQ(check.Check(baseline, "").layer_forwards, 0);  // from the last layer's kept output
  for (int layer = 0; layer < 4; ++layer) {
    EvalResult r = check.Check(baseline, Component(layer, "mlp.up_proj") + "=int8-absmax");
    EXPECT_EQ(r.layer_forwards, (4 - layer) * 4) << "layer " << layer;
    EXPECT_EQ(r.full_layer_forwards, 4 * 4);
  }
}

TEST(ActivationReuseTest, ChildrenStartFromTheirParentsStreams) {
  std::unique_ptr<LlamaModel> model = FourLayerModel();
  const Baseline baseline = MakeBaseline(*model, 4, 7);
  ReuseChecker check(model.get(), baseline, int64_t{1} << 30, 1, 4);
  for (const std::string& method : {std::string("llm-int8"), std::string("gptq:4:g16"), std::string("prune:0.6")}) {
    const std::string parent = Component(0, "self_attn.v_proj") + "=" + method;
    check.Check(baseline, parent);
    // The first child computes the parent's streams up to its layer (3) and keeps them...
    const std::string child3 = parent + "," + Component(3, "mlp.up_proj") + "=" + method;
    check.Check(baseline, child3, parent);
    // ...so that a sibling adding at layer 2 starts there, and one at layer 3 too.
    EXPECT_EQ(check.Check(baseline, parent + "," + Component(2, "mlp.up_proj") + "=" + method, parent).layer_forwards,
              2 * 4)
        << method;
    EXPECT_EQ(check.Check(baseline, parent + "," + Component(3, "self_attn.q_proj") + "=" + method, parent).layer_forwards,
              1 * 4)
        << method;
    // A grandchild of child3 adds below child3's highest component: child3's stream at layer 1.
    const std::string grandchild = child3 + "," + Component(1, "mlp.gate_proj") + "=" + method;
    check.Check(baseline, grandchild, child3);
  }
  // A parent that is not one (a lie, or a stale one) keeps other streams but never changes a result.
  check.Check(baseline, Component(1, "mlp.up_proj") + "=int8-absmax-row", Component(0, "mlp.up_proj") + "=gptq:8");
  check.Check(baseline, Component(2, "mlp.up_proj") + "=int8-absmax", Component(2, "mlp.up_proj") + "=prune:0.5");
  EXPECT_TRUE(check.bit_equal_nll());
}

TEST(ActivationReuseTest, AnEvictedStreamIsComputedAgainAndTheBudgetHolds) {
  std::unique_ptr<LlamaModel> model = FourLayerModel();
  const Baseline baseline = MakeBaseline(*model, 6, 9);
  const int64_t stream = 2 * static_cast<int64_t>(baseline.rows[0].tokens.size()) * 32 * 4;  // a batch of 2, float32
  ReuseChecker check(model.get(), baseline, 3 * stream, 1, 2);  // room for 3 of the 12 uncompressed streams
  for (int round = 0; round < 2; ++round) {
    for (int layer = 3; layer >= 0; --layer) {
      check.Check(baseline, Component(layer, "mlp.down_proj") + "=prune:0.4");
      check.Check(baseline, Component(layer, "self_attn.o_proj") + "=llm-int8");
    }
  }
  EXPECT_GT(check.cache().evictions(), 0);
  EXPECT_LE(check.cache().bytes(), 3 * stream);
  EXPECT_GT(check.cache().hits(), 0);
}

TEST(ActivationReuseTest, KeepingEveryOtherLayerStartsAtMostOneLayerLower) {
  std::unique_ptr<LlamaModel> model = FourLayerModel();
  const Baseline baseline = MakeBaseline(*model, 4, 11);
  ReuseChecker check(model.get(), baseline, int64_t{1} << 30, 2, 4);
  check.Check(baseline, "");
  EXPECT_EQ(check.Check(baseline, Component(3, "mlp.up_proj") + "=int8-absmax").layer_forwards, 2 * 4);
  EXPECT_EQ(check.Check(baseline, Component(2, "mlp.up_proj") + "=int8-absmax").layer_forwards, 2 * 4);
  EXPECT_EQ(check.Check(baseline, Component(1, "mlp.up_proj") + "=int8-absmax").layer_forwards, 4 * 4);
}

TEST(ActivationReuseTest, StreamsOfOtherProbesOrBatchingsAreNeverUsed) {
  std::unique_ptr<LlamaModel> model = FourLayerModel();
  const Baseline a = MakeBaseline(*model, 4, 21);
  const Baseline b = MakeBaseline(*model, 4, 22);
  ReuseChecker check(model.get(), a, int64_t{1} << 30, 1, 4);
  check.Check(a, "");
  EvalResult other = check.Check(b, Component(2, "mlp.up_proj") + "=int8-absmax");
  EXPECT_EQ(other.layer_forwards, 4 * 4);  // b's probes have no kept streams
  // The same probes in another order are other batches.
  Baseline reversed = a;
  std::reverse(reversed.rows.begin(), reversed.rows.end());
  EXPECT_EQ(check.Check(reversed, Component(2, "mlp.up_proj") + "=int8-absmax").layer_forwards, 4 * 4);
}

// The tiny model of the `tiny_model` fixture (DTM_TINY_MODEL): a trained 8-layer Llama, so that the
// metrics are those of a real model's divergences, not of random weights.
TEST(ActivationReuseTinyModelTest, EveryMethodEqualsAFullForward) {
  const char* dir = std::getenv("DTM_TINY_MODEL");
  ASSERT_NE(dir, nullptr) << "DTM_TINY_MODEL names the tiny model's folder";
  StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir);
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().ToString();
  StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(**checkpoint, ModelOptions{});
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const Baseline baseline = MakeBaseline(**model, 6, 31);
  ReuseChecker check(model->get(), baseline, int64_t{1} << 30, 1, 3);
  const int layers = static_cast<int>((*model)->config().num_hidden_layers);
  for (const std::string& method : Methods()) {
    for (int layer = layers - 1; layer >= 0; layer -= 3) {
      check.Check(baseline, Component(layer, "mlp.down_proj") + "=" + method);
    }
    // A two-level search path: the level-2 child extends the level-1 node.
    const std::string node = Component(1, "self_attn.q_proj") + "=" + method;
    check.Check(baseline, node);
    check.Check(baseline, node + "," + Component(layers - 2, "mlp.up_proj") + "=" + method, node);
  }
  EXPECT_TRUE(check.bit_equal_nll());
}

}  // namespace
}  // namespace dtm
