// The sparsify-round driver: its probes, the previous-round file, the checks at creation, and the
// allocation it reports against the solver called directly on hand-built curves.
#include "coordinator/sparsify_round.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/components.h"
#include "coordinator/sparsity_allocation.h"

namespace dtm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kLayers = 2;
constexpr int64_t kCompletion = 64;

// The tiny model's shapes: attention q/o 128x128, k/v 128x64, MLP 128x384.
ModelGeometry Geometry() {
  ModelGeometry g;
  g.num_layers = kLayers;
  for (const ComponentId& c : AllComponents(kLayers)) {
    uint64_t n = 128 * 384;
    if (c.kind == ComponentKind::kQ || c.kind == ComponentKind::kO) n = 128 * 128;
    if (c.kind == ComponentKind::kK || c.kind == ComponentKind::kV) n = 128 * 64;
    g.component_params[c.Name()] = n;
  }
  return g;
}

// A double as JSON text that parses back to the same value (std::to_string keeps six decimals only).
std::string FullPrecision(double value) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.17g", value);
  return buf;
}

JobSpec RoundSpec(double step, const std::vector<std::string>& globs = {}) {
  JobSpec spec;
  spec.kind = JobKind::kSparsifyRound;
  spec.step = step;
  spec.completion_len = kCompletion;
  spec.components = globs;
  return spec;
}

class SparsifyRoundTest : public ::testing::Test {
 protected:
  // Writes `allocation_json` as the "allocation" of a results file and returns its path.
  std::string WritePrevious(const std::string& allocation_json) {
    const std::string path = (dir_ / ("previous" + std::to_string(files_++) + ".json")).string();
    std::ofstream(path) << R"({"job_id": "j-1", "state": "SUCCEEDED", "results": [], "allocation": )"
                        << allocation_json << "}\n";
    return path;
  }

  // A previous round over the given components of the 2-layer geometry at the given targets.
  std::string PreviousWith(const std::map<std::string, double>& targets, int layers = kLayers) {
    const ModelGeometry g = Geometry();
    std::string rows;
    for (const auto& [name, target] : targets) {
      if (!rows.empty()) rows += ",";
      rows += R"({"component": ")" + name + R"(", "params": )" + std::to_string(g.component_params.at(name)) +
              R"(, "current": 0, "extra": 0, "target": )" + FullPrecision(target) + R"(, "predicted_fdt75": 10})";
    }
    return WritePrevious(R"({"method": "balanced", "step": 0.1, "num_layers": )" + std::to_string(layers) +
                         R"(, "model_fingerprint": "abcdef0123456789", "components": [)" + rows + "]}");
  }

  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("sparsify_round_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
  int files_ = 0;
};

SparsifyRoundDriver* AsRound(const std::unique_ptr<JobDriver>& driver) {
  return dynamic_cast<SparsifyRoundDriver*>(driver.get());
}

// Made-up FDT75s that fall with the target and differ between components, so the allocation is not
// uniform: component i at target t -> 64 * (1 - t * (1 + i % 5)), floored at 0.
std::map<std::string, v1::Metrics> MadeUpMetrics(const std::vector<std::string>& configs,
                                                 std::map<std::string, double>* fdt_by_config) {
  std::map<std::string, v1::Metrics> evaluated;
  for (const std::string& config : configs) {
    const size_t eq = config.find("=prune:");
    const double target = std::stod(config.substr(eq + 7));
    StatusOr<ComponentId> id = ParseComponentName(config.substr(0, eq), kLayers);
    EXPECT_TRUE(id.ok()) << config;
    const int index = id.ok() ? id->Index() : 0;
    v1::Metrics m;
    m.set_fdt75(std::max(0.0, kCompletion * (1 - target * (1 + index % 5))));
    (*fdt_by_config)[config] = m.fdt75();
    evaluated[config] = m;
  }
  return evaluated;
}

TEST_F(SparsifyRoundTest, ProbesEveryComponentAtHalfAndOneAndAHalfStepsAsThePaperDoes) {
  StatusOr<std::unique_ptr<JobDriver>> driver = CreateJobDriver(RoundSpec(0.1, {"model.layers.1.mlp.*"}), Geometry());
  ASSERT_TRUE(driver.ok()) << driver.status().ToString();
  StatusOr<std::optional<std::vector<std::string>>> stage = (*driver)->NextStage({});
  ASSERT_TRUE(stage.ok() && stage->has_value());
  EXPECT_THAT(**stage, ElementsAre("model.layers.1.mlp.gate_proj=prune:0.05", "model.layers.1.mlp.gate_proj=prune:0.15",
                                   "model.layers.1.mlp.up_proj=prune:0.05", "model.layers.1.mlp.up_proj=prune:0.15",
                                   "model.layers.1.mlp.down_proj=prune:0.05", "model.layers.1.mlp.down_proj=prune:0.15"));
  EXPECT_EQ((*driver)->MaxStageConfigs(), 6u);
  EXPECT_FALSE((*driver)->Allocation({}).has_value());

  // probe_at names other multiples of the step (here the three points of earlier releases).
  JobSpec three = RoundSpec(0.1, {"model.layers.1.mlp.up_proj"});
  three.probe_multiples = {0.5, 1, 1.5};
  driver = CreateJobDriver(three, Geometry());
  ASSERT_TRUE(driver.ok()) << driver.status().ToString();
  EXPECT_THAT(AsRound(*driver)->ProbeConfigs(),
              ElementsAre("model.layers.1.mlp.up_proj=prune:0.05", "model.layers.1.mlp.up_proj=prune:0.1",
                          "model.layers.1.mlp.up_proj=prune:0.15"));
}

TEST_F(SparsifyRoundTest, ProbesOnTopOfThePreviousRoundRoundedAndWithinTheRoom) {
  JobSpec spec = RoundSpec(0.1, {"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.k_proj"});
  spec.previous = PreviousWith({{"model.layers.0.self_attn.q_proj", 0.123456789},
                                {"model.layers.0.self_attn.k_proj", 0.82}});
  StatusOr<std::unique_ptr<JobDriver>> driver = CreateJobDriver(spec, Geometry());
  ASSERT_TRUE(driver.ok()) << driver.status().ToString();
  // k_proj has 18% left: 0.82 + 0.15 = 0.97 still fits; q_proj's targets are rounded to 1e-6.
  EXPECT_THAT(AsRound(*driver)->ProbeConfigs(),
              ElementsAre("model.layers.0.self_attn.q_proj=prune:0.173457", "model.layers.0.self_attn.q_proj=prune:0.273457",
                          "model.layers.0.self_attn.k_proj=prune:0.87", "model.layers.0.self_attn.k_proj=prune:0.97"));

  spec.previous = PreviousWith({{"model.layers.0.self_attn.k_proj", 0.9}});
  driver = CreateJobDriver(spec, Geometry());
  ASSERT_TRUE(driver.ok()) << driver.status().ToString();
  // 10% left: the probe at 0.9 + 0.15 has no room and the curve's end point (1, 0) stands in for it.
  EXPECT_THAT(AsRound(*driver)->ProbeConfigs(),
              ElementsAre("model.layers.0.self_attn.q_proj=prune:0.05", "model.layers.0.self_attn.q_proj=prune:0.15",
                          "model.layers.0.self_attn.k_proj=prune:0.95"));
}

TEST_F(SparsifyRoundTest, AllocatesAsTheSolverDoesOnTheProbedCurvesAndMeetsTheStep) {
  JobSpec spec = RoundSpec(0.08);
  spec.previous = PreviousWith({{"model.layers.0.mlp.up_proj", 0.2}, {"model.layers.1.self_attn.v_proj", 0.4}});
  StatusOr<std::unique_ptr<JobDriver>> driver = CreateJobDriver(spec, Geometry());
  ASSERT_TRUE(driver.ok()) << driver.status().ToString();
  const std::vector<std::string> configs = AsRound(*driver)->ProbeConfigs();
  ASSERT_EQ(configs.size(), 2u * 7 * kLayers);
  std::map<std::string, double> fdt;
  const std::map<std::string, v1::Metrics> evaluated = MadeUpMetrics(configs, &fdt);
  StatusOr<std::optional<std::vector<std::string>>> stage = (*driver)->NextStage(evaluated);
  ASSERT_TRUE(stage.ok()) << stage.status().ToString();
  EXPECT_FALSE(stage->has_value());

  // The same curves built by hand from the nominal steps (0.04 and 0.12 above the current).
  const ModelGeometry g = Geometry();
  std::vector<ComponentCurve> curves;
  for (const ComponentId& c : AllComponents(kLayers)) {
    ComponentCurve curve;
    curve.name = c.Name();
    curve.params = static_cast<double>(g.component_params.at(c.Name()));
    curve.current_sparsity = c.Name() == "model.layers.0.mlp.up_proj" ? 0.2
                             : c.Name() == "model.layers.1.self_attn.v_proj" ? 0.4
                                                                              : 0.0;
    for (double s : {0.04, 0.12}) {
      char target[32];
      std::snprintf(target, sizeof target, "%g", curve.current_sparsity + s);
      curve.probes.emplace_back(s, fdt.at(c.Name() + "=prune:" + target));
    }
    curves.push_back(curve);
  }
  StatusOr<Allocation> expected = AllocateBalancedSparsity(curves, {0.08, static_cast<double>(kCompletion)});
  ASSERT_TRUE(expected.ok()) << expected.status().ToString();

  std::optional<v1::SparsityAllocation> got = (*driver)->Allocation(evaluated);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->method(), "balanced");
  EXPECT_EQ(got->step(), 0.08);
  EXPECT_EQ(got->completion_len(), kCompletion);
  EXPECT_EQ(got->num_layers(), static_cast<uint32_t>(kLayers));
  ASSERT_EQ(got->components_size(), static_cast<int>(curves.size()));
  double weighted = 0, total = 0;
  bool uniform = true;
  for (int i = 0; i < got->components_size(); ++i) {
    const v1::ComponentSparsity& row = got->components(i);
    EXPECT_EQ(row.component(), curves[i].name);
    EXPECT_EQ(row.params(), static_cast<uint64_t>(curves[i].params));
    EXPECT_EQ(row.current(), curves[i].current_sparsity);
    EXPECT_NEAR(row.extra(), expected->extra[i], 1e-9) << row.component();
    EXPECT_DOUBLE_EQ(row.target(), row.current() + row.extra());
    EXPECT_NEAR(row.predicted_fdt75(), expected->predicted_fdt75[i], 1e-6) << row.component();
    EXPECT_GE(row.predicted_fdt75(), got->min_fdt75() - 1e-9);
    weighted += row.extra() * static_cast<double>(row.params());
    total += static_cast<double>(row.params());
    if (std::abs(row.extra() - 0.08) > 1e-3) uniform = false;
  }
  EXPECT_NEAR(weighted / total, 0.08, 1e-9);
  EXPECT_NEAR(got->achieved_step(), 0.08, 1e-9);
  EXPECT_NEAR(got->min_fdt75(), expected->min_fdt75, 1e-6);
  EXPECT_FALSE(uniform) << "made-up curves that differ should not give every component the step";

  // Results: the probes in stage order, complete.
  std::vector<v1::ConfigResult> rows = (*driver)->Results(evaluated);
  ASSERT_EQ(rows.size(), configs.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].config(), configs[i]);
    EXPECT_TRUE(rows[i].complete());
    EXPECT_EQ(rows[i].metrics().fdt75(), fdt.at(configs[i]));
  }
}

TEST_F(SparsifyRoundTest, UniformGivesEveryComponentTheStepFromTheSameProbes) {
  JobSpec spec = RoundSpec(0.1, {"model.layers.0.*"});
  StatusOr<std::unique_ptr<JobDriver>> balanced = CreateJobDriver(spec, Geometry());
  spec.uniform_allocation = true;
  StatusOr<std::unique_ptr<JobDriver>> uniform = CreateJobDriver(spec, Geometry());
  ASSERT_TRUE(balanced.ok() && uniform.ok());
  EXPECT_EQ(AsRound(*uniform)->ProbeConfigs(), AsRound(*balanced)->ProbeConfigs());
  std::map<std::string, double> fdt;
  const auto evaluated = MadeUpMetrics(AsRound(*uniform)->ProbeConfigs(), &fdt);
  std::optional<v1::SparsityAllocation> got = (*uniform)->Allocation(evaluated);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->method(), "uniform");
  for (const v1::ComponentSparsity& row : got->components()) {
    EXPECT_DOUBLE_EQ(row.extra(), 0.1) << row.component();
    // Halfway between the probes at 0.05 and 0.15: their mean (the made-up curves are falling lines).
    EXPECT_NEAR(row.predicted_fdt75(),
                (fdt.at(row.component() + "=prune:0.05") + fdt.at(row.component() + "=prune:0.15")) / 2, 1e-9)
        << row.component();
  }
  EXPECT_NEAR(got->achieved_step(), 0.1, 1e-12);
}

TEST_F(SparsifyRoundTest, RefusesAStepBeyondWhatIsLeftToPrune) {
  JobSpec spec = RoundSpec(0.5, {"model.layers.0.mlp.*"});
  spec.previous = PreviousWith({{"model.layers.0.mlp.gate_proj", 0.6},
                                {"model.layers.0.mlp.up_proj", 0.6},
                                {"model.layers.0.mlp.down_proj", 0.6}});
  StatusOr<std::unique_ptr<JobDriver>> driver = CreateJobDriver(spec, Geometry());
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(driver.status().message(),
              HasSubstr("sparsify-round.step: 50% exceeds what is left to prune: the selected components are 60% "
                        "sparse on average, leaving 40%"));

  // Uniform needs the step in every component; balanced can take it from the others.
  spec = RoundSpec(0.3, {"model.layers.0.mlp.*"});
  spec.previous = PreviousWith({{"model.layers.0.mlp.up_proj", 0.75}});
  EXPECT_TRUE(CreateJobDriver(spec, Geometry()).ok());
  spec.uniform_allocation = true;
  driver = CreateJobDriver(spec, Geometry());
  ASSERT_FALSE(driver.ok());
  EXPECT_THAT(driver.status().message(), HasSubstr("30% exceeds what is left to prune of model.layers.0.mlp.up_proj (75%"));
}

TEST_F(SparsifyRoundTest, RefusesAPreviousRoundOfAnotherModelOrUnreadable) {
  JobSpec spec = RoundSpec(0.1);
  auto expect_refused = [&](const std::string& previous, const std::vector<std::string>& parts) {
    spec.previous = previous;
    StatusOr<std::unique_ptr<JobDriver>> driver = CreateJobDriver(spec, Geometry());
    ASSERT_FALSE(driver.ok()) << previous;
    EXPECT_EQ(driver.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(driver.status().message(), HasSubstr("job spec: sparsify-round.previous: " + previous + ": "));
    for (const std::string& part : parts) EXPECT_THAT(driver.status().message(), HasSubstr(part));
  };
  expect_refused((dir_ / "missing.json").string(), {"cannot be read"});
  const std::string not_json = (dir_ / "notes.txt").string();
  std::ofstream(not_json) << "round 1: 10%\n";
  expect_refused(not_json, {"is not JSON"});
  const std::string probe_results = (dir_ / "probe.json").string();
  std::ofstream(probe_results) << R"({"job_id": "j-2", "results": []})";
  expect_refused(probe_results, {"holds no sparsify-round allocation", "dtmctl results ROUND --format json"});
  expect_refused(PreviousWith({{"model.layers.0.mlp.up_proj", 0.1}}, 4),
                 {"a model with 4 layers (fingerprint abcdef012345), but this job's model has 2", "another model"});
  // Same layer count, other sizes: a wider model's round.
  expect_refused(WritePrevious(R"({"num_layers": 2, "components": [{"component": "model.layers.0.mlp.up_proj",
                                  "params": 65536, "target": 0.1}]})"),
                 {"model.layers.0.mlp.up_proj has 65536 weights there but 49152 in this job's model", "another model"});
  expect_refused(WritePrevious(R"({"num_layers": 2, "components": [{"component": "model.layers.0.mlp.up_proj",
                                  "params": 49152, "target": 1.0}]})"),
                 {"allocation.components[0] (model.layers.0.mlp.up_proj): target must be in [0, 1)"});
  expect_refused(WritePrevious(R"({"num_layers": 2, "components": [{"component": "model.layers.0.mlp.upproj",
                                  "params": 49152, "target": 0.1}]})"),
                 {"allocation.components[0]", "upproj"});
  expect_refused(WritePrevious(R"({"num_layers": 2, "components": [{"component": "model.layers.0.mlp.up_proj"}]})"),
                 {"needs component (string), params (integer) and target (number)"});
}

TEST_F(SparsifyRoundTest, RefusesAFilterMatchingNothingAndUnknownSizes) {
  StatusOr<std::unique_ptr<JobDriver>> driver = CreateJobDriver(RoundSpec(0.1, {"*.lm_head"}), Geometry());
  ASSERT_FALSE(driver.ok());
  EXPECT_THAT(driver.status().message(), HasSubstr("sparsify-round.components[0] '*.lm_head': matches no component"));

  ModelGeometry no_sizes = Geometry();
  no_sizes.component_params.clear();
  driver = CreateJobDriver(RoundSpec(0.1), no_sizes);
  ASSERT_FALSE(driver.ok());
  EXPECT_EQ(driver.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(driver.status().message(), HasSubstr("size of model.layers.0.self_attn.q_proj is unknown"));
}

}  // namespace
}  // namespace dtm
