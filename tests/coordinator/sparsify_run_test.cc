// The sparsification run's round driver as a pure function of stored results, on made-up results:
// stages in order round by round, resuming at any stage, uniform runs skipping the probes, the last
// round's re-masking, the plan's checks, and each round's allocation against the sparsify-round driver
// called directly.
#include "coordinator/sparsify_run.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <string>
#include <vector>

#include "common/compression_config.h"
#include "coordinator/job_spec.h"
#include "coordinator/sparsify_planner.h"

namespace dtm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kLayers = 2;
constexpr int64_t kCompletion = 64;

SparsifyRunPlan Plan(std::vector<double> schedule, bool uniform = false) {
  SparsifyRunPlan plan;
  plan.model = "/models/dense";
  plan.output = "/runs/r1";
  plan.schedule = std::move(schedule);
  plan.uniform = uniform;
  plan.completion_len = kCompletion;
  plan.num_layers = kLayers;
  // Three components of different sizes (the tiny model's q, k and an MLP matrix).
  plan.components = {{"model.layers.0.self_attn.q_proj", 128 * 128, 0},
                     {"model.layers.0.self_attn.k_proj", 128 * 64, 0},
                     {"model.layers.1.mlp.up_proj", 128 * 384, 0}};
  return plan;
}

// Made-up FDT75s that fall with the target, faster for later components, so that a balanced
// allocation is not uniform: component i at target t -> 64 * (1 - t * (1 + i)), floored at 0.
std::map<std::string, v1::Metrics> MadeUpProbes(const SparsifyRunPlan& plan,
                                                const std::vector<std::string>& configs) {
  std::map<std::string, v1::Metrics> out;
  for (const std::string& config : configs) {
    const size_t eq = config.find("=prune:");
    const std::string name = config.substr(0, eq);
    const double target = std::stod(config.substr(eq + 7));
    const auto it = std::find_if(plan.components.begin(), plan.components.end(),
                                 [&](const SparsifyRoundDriver::Component& c) { return c.name == name; });
    EXPECT_NE(it, plan.components.end()) << config;
    const double i = static_cast<double>(it - plan.components.begin());
    v1::Metrics m;
    m.set_fdt75(std::max(0.0, kCompletion * (1 - target * (1 + i))));
    out[config] = m;
  }
  return out;
}

// Stores what `action` produces, as the coordinator would once its tasks are done.
void Complete(const SparsifyRunPlan& plan, const SparsifyAction& action, SparsifyRunRecord* record) {
  if (record->rounds.size() < static_cast<size_t>(action.round)) record->rounds.resize(action.round);
  SparsifyRoundRecord& round = record->rounds[action.round - 1];
  switch (action.stage) {
    case SparsifyStage::kProbe: round.probes = MadeUpProbes(plan, action.configs); break;
    case SparsifyStage::kTrain: round.trained_fingerprint = "fp-" + std::to_string(action.round); break;
    case SparsifyStage::kEvaluate: round.evaluated = true; break;
    default: break;
  }
}

// Runs the plan to the end, returning every action in order.
std::vector<SparsifyAction> RunToTheEnd(const SparsifyRunPlan& plan, SparsifyRunRecord* record) {
  std::vector<SparsifyAction> actions;
  for (int guard = 0; guard < 100; ++guard) {
    StatusOr<SparsifyAction> next = NextSparsifyAction(plan, *record);
    EXPECT_TRUE(next.ok()) << next.status().ToString();
    if (!next.ok() || next->stage == SparsifyStage::kDone) break;
    actions.push_back(*next);
    Complete(plan, *next, record);
  }
  return actions;
}

std::vector<std::string> Stages(const std::vector<SparsifyAction>& actions) {
  std::vector<std::string> out;
  for (const SparsifyAction& a : actions) out.push_back(std::to_string(a.round) + " " + SparsifyStageName(a.stage));
  return out;
}

// The parameter-weighted average of an allocation's targets.
double AverageTarget(const SparsifyRunPlan& plan, const v1::SparsityAllocation& allocation) {
  double weighted = 0, total = 0;
  for (int i = 0; i < allocation.components_size(); ++i) {
    weighted += allocation.components(i).target() * static_cast<double>(plan.components[i].params);
    total += static_cast<double>(plan.components[i].params);
  }
  return weighted / total;
}

TEST(SparsifyRunTest, ABalancedRunProbesTrainsAndEvaluatesEachRoundAndRemasksTheLast) {
  const SparsifyRunPlan plan = Plan({0.2, 0.15});
  ASSERT_TRUE(CheckSparsifyRunPlan(plan).ok());
  SparsifyRunRecord record;
  const std::vector<SparsifyAction> actions = RunToTheEnd(plan, &record);
  EXPECT_THAT(Stages(actions),
              ElementsAre("1 probe", "1 train", "1 evaluate", "2 probe", "2 train", "2 evaluate"));
  // Round 1 reads the starting model, round 2 round 1's trained one; each writes its own folder,
  // the last one the run's final model, re-masked after its unmasked phase.
  EXPECT_EQ(actions[0].model, "/models/dense");
  EXPECT_EQ(actions[1].model, "/models/dense");
  EXPECT_EQ(actions[1].output, "/runs/r1/round-1");
  EXPECT_FALSE(actions[1].remask);
  EXPECT_EQ(actions[2].model, "/runs/r1/round-1");
  EXPECT_EQ(actions[3].model, "/runs/r1/round-1");
  EXPECT_EQ(actions[4].model, "/runs/r1/round-1");
  EXPECT_EQ(actions[4].output, "/runs/r1/final");
  EXPECT_TRUE(actions[4].remask);
  EXPECT_EQ(actions[5].model, "/runs/r1/final");

  // Round 1's probes: step/2 and 3*step/2 on the dense model; its allocation is the sparsify-round
  // driver's on the same probes.
  EXPECT_THAT(actions[0].configs,
              ElementsAre("model.layers.0.self_attn.q_proj=prune:0.1", "model.layers.0.self_attn.q_proj=prune:0.3",
                          "model.layers.0.self_attn.k_proj=prune:0.1", "model.layers.0.self_attn.k_proj=prune:0.3",
                          "model.layers.1.mlp.up_proj=prune:0.1", "model.layers.1.mlp.up_proj=prune:0.3"));
  SparsifyRoundDriver direct(plan.components, 0.2, {0.5, 1.5}, false, kCompletion, kLayers);
  std::optional<v1::SparsityAllocation> expected = direct.Allocation(record.rounds[0].probes);
  ASSERT_TRUE(expected.has_value());
  ASSERT_TRUE(actions[1].allocation.has_value());
  EXPECT_EQ(actions[1].allocation->SerializeAsString(), expected->SerializeAsString());
  EXPECT_NEAR(AverageTarget(plan, *actions[1].allocation), 0.2, 1e-9);
  double smallest = 1, largest = 0;
  for (const v1::ComponentSparsity& row : actions[1].allocation->components()) {
    smallest = std::min(smallest, row.extra());
    largest = std::max(largest, row.extra());
  }
  EXPECT_GT(largest - smallest, 0.01) << "made-up curves that differ should not be pruned alike";

  // Round 2 probes on top of round 1's targets, and its allocation starts from them.
  const v1::SparsityAllocation& round2 = *actions[4].allocation;
  for (int i = 0; i < round2.components_size(); ++i) {
    EXPECT_DOUBLE_EQ(round2.components(i).current(), actions[1].allocation->components(i).target());
  }
  EXPECT_NEAR(AverageTarget(plan, round2), 0.35, 1e-9);
  std::vector<SparsifyRoundDriver::Component> after_round1 = plan.components;
  for (int i = 0; i < 3; ++i) after_round1[i].current = actions[1].allocation->components(i).target();
  EXPECT_EQ(actions[3].configs,
            SparsifyRoundDriver(after_round1, 0.15, {0.5, 1.5}, false, kCompletion, kLayers).ProbeConfigs());
  const std::string& first_probe = actions[3].configs[0];  // q_proj at its round-1 target + 0.075
  EXPECT_NEAR(std::stod(first_probe.substr(first_probe.find("prune:") + 6)), after_round1[0].current + 0.075,
              1e-6);

  // Each training stage prunes to its round's cumulative targets, as one canonical config.
  for (const auto& [i, allocation] : {std::pair{1, *actions[1].allocation}, std::pair{4, round2}}) {
    StatusOr<CompressionConfig> config = ParseCompressionConfig(actions[i].prune_config, kLayers);
    ASSERT_TRUE(config.ok()) << actions[i].prune_config;
    EXPECT_EQ(config->Canonical(), actions[i].prune_config);
    ASSERT_EQ(config->entries.size(), 3u);
    for (const auto& [id, method] : config->entries) {
      bool found = false;
      for (const v1::ComponentSparsity& row : allocation.components()) {
        if (row.component() != id.Name()) continue;
        found = true;
        EXPECT_EQ(method.fraction, row.target()) << id.Name();
      }
      EXPECT_TRUE(found) << id.Name();
    }
  }

  // Every round's allocation, for results.
  StatusOr<std::vector<v1::SparsityAllocation>> all = SparsifyRunAllocations(plan, record);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[1].SerializeAsString(), round2.SerializeAsString());
}

TEST(SparsifyRunTest, ResumesAtAnyStageFromWhatIsStoredAlone) {
  const SparsifyRunPlan plan = Plan({0.2, 0.15, 0.1});
  SparsifyRunRecord record;
  const std::vector<SparsifyAction> actions = RunToTheEnd(plan, &record);
  ASSERT_EQ(actions.size(), 9u);  // 3 rounds x (probe, train, evaluate)
  // A coordinator that restarts after k stages has only the store: from the record of those k,
  // the run goes on with exactly the stages left, none of the k again, with the same inputs.
  for (size_t k = 0; k <= actions.size(); ++k) {
    SparsifyRunRecord stored;
    for (size_t i = 0; i < k; ++i) Complete(plan, actions[i], &stored);
    const std::vector<SparsifyAction> rest = RunToTheEnd(plan, &stored);
    ASSERT_EQ(rest.size(), actions.size() - k) << "after " << k << " stages";
    for (size_t i = 0; i < rest.size(); ++i) {
      const SparsifyAction& want = actions[k + i];
      EXPECT_EQ(rest[i].stage, want.stage) << "after " << k << " stages";
      EXPECT_EQ(rest[i].round, want.round);
      EXPECT_EQ(rest[i].model, want.model);
      EXPECT_EQ(rest[i].configs, want.configs);
      EXPECT_EQ(rest[i].prune_config, want.prune_config);
      EXPECT_EQ(rest[i].output, want.output);
      EXPECT_EQ(rest[i].remask, want.remask);
    }
  }

  // Probes half in (a restart mid-stage): the round still probes, listing every config (the stored
  // ones come from the cache at no cost); a trained model without its evaluation: evaluate next.
  SparsifyRunRecord partial;
  partial.rounds.resize(1);
  const std::map<std::string, v1::Metrics> probes = MadeUpProbes(plan, actions[0].configs);
  partial.rounds[0].probes.insert(*probes.begin());
  StatusOr<SparsifyAction> next = NextSparsifyAction(plan, partial);
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->stage, SparsifyStage::kProbe);
  EXPECT_EQ(next->configs, actions[0].configs);
  partial.rounds[0].probes = probes;
  partial.rounds[0].trained_fingerprint = "fp-1";
  EXPECT_EQ(NextSparsifyAction(plan, partial)->stage, SparsifyStage::kEvaluate);
}

TEST(SparsifyRunTest, AUniformRunNeverProbesAndPrunesEveryComponentBySteps) {
  const SparsifyRunPlan plan = Plan({0.2, 0.15}, /*uniform=*/true);
  SparsifyRunRecord record;
  const std::vector<SparsifyAction> actions = RunToTheEnd(plan, &record);
  EXPECT_THAT(Stages(actions), ElementsAre("1 train", "1 evaluate", "2 train", "2 evaluate"));
  EXPECT_EQ(actions[0].prune_config,
            "model.layers.0.self_attn.k_proj=prune:0.2,model.layers.0.self_attn.q_proj=prune:0.2,"
            "model.layers.1.mlp.up_proj=prune:0.2");
  EXPECT_EQ(actions[2].prune_config,
            "model.layers.0.self_attn.k_proj=prune:0.35,model.layers.0.self_attn.q_proj=prune:0.35,"
            "model.layers.1.mlp.up_proj=prune:0.35");
  EXPECT_TRUE(actions[2].remask);
  EXPECT_EQ(actions[2].allocation->method(), "uniform");
  for (const v1::ComponentSparsity& row : actions[2].allocation->components()) {
    EXPECT_DOUBLE_EQ(row.current(), 0.2);
    EXPECT_DOUBLE_EQ(row.extra(), 0.15);
    EXPECT_EQ(row.predicted_fdt75(), 0);  // not probed: no prediction
  }
  // Every round's allocation is known from the start.
  EXPECT_EQ(SparsifyRunAllocations(plan, {})->size(), 2u);
}

TEST(SparsifyRunTest, ARunThatStartsSparseEndsAtItsStartPlusTheSteps) {
  SparsifyRunPlan plan = Plan({0.1}, /*uniform=*/true);
  plan.components[0].current = 0.5;  // an earlier run pruned half of q_proj
  SparsifyRunRecord record;
  const std::vector<SparsifyAction> actions = RunToTheEnd(plan, &record);
  ASSERT_EQ(actions.size(), 2u);
  EXPECT_EQ(actions[0].stage, SparsifyStage::kTrain);
  EXPECT_EQ(actions[0].output, "/runs/r1/final");
  EXPECT_TRUE(actions[0].remask);
  EXPECT_EQ(actions[0].prune_config,
            "model.layers.0.self_attn.k_proj=prune:0.1,model.layers.0.self_attn.q_proj=prune:0.6,"
            "model.layers.1.mlp.up_proj=prune:0.1");
}

TEST(SparsifyRunTest, RefusesSchedulesThatCannotEndBelowAHundredPercent) {
  const std::vector<double> paper = PaperSparsifySchedule();
  EXPECT_EQ(paper.size(), 8u);
  EXPECT_NEAR(std::accumulate(paper.begin(), paper.end(), 0.0), 0.75, 1e-12);
  EXPECT_TRUE(CheckSparsifyRunPlan(Plan(PaperSparsifySchedule())).ok());
  EXPECT_THAT(CheckSparsifyRunPlan(Plan({})).message(), HasSubstr("no rounds"));
  EXPECT_THAT(CheckSparsifyRunPlan(Plan({0.5, 0.5})).message(),
              HasSubstr("the steps add up to 100%: the run must end below 100%"));
  EXPECT_THAT(CheckSparsifyRunPlan(Plan({0.2, -0.05})).message(),
              HasSubstr("sparsify.schedule[1]: a step must be in (0, 1)"));
  SparsifyRunPlan started = Plan({0.3, 0.3});
  started.components[2].current = 0.6;  // the MLP is most of the weights: 0.6 * 49152 / 73728 = 40 % on average
  EXPECT_THAT(CheckSparsifyRunPlan(started).message(), HasSubstr("on top of the 40% already pruned on average"));
  SparsifyRunPlan uniform = Plan({0.3}, /*uniform=*/true);
  uniform.components[1].current = 0.7;
  EXPECT_THAT(CheckSparsifyRunPlan(uniform).message(),
              HasSubstr("model.layers.0.self_attn.k_proj already pruned leaves it nothing"));
  SparsifyRunPlan none = Plan({0.1});
  none.components.clear();
  EXPECT_THAT(CheckSparsifyRunPlan(none).message(), HasSubstr("no component"));
}

TEST(SparsifyRunTest, ProbesTheSolverCannotUseFailTheRunNamingTheRound) {
  const SparsifyRunPlan plan = Plan({0.2, 0.1});
  SparsifyRunRecord record;
  StatusOr<SparsifyAction> first = NextSparsifyAction(plan, record);
  ASSERT_TRUE(first.ok());
  record.rounds.resize(1);
  record.rounds[0].probes = MadeUpProbes(plan, first->configs);
  record.rounds[0].probes.begin()->second.set_fdt75(kCompletion + 1);  // an FDT75 beyond the completion
  StatusOr<SparsifyAction> next = NextSparsifyAction(plan, record);
  ASSERT_FALSE(next.ok());
  EXPECT_EQ(next.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(next.status().message(), HasSubstr("round 1: "));
}

// A sparsify spec's plan on a model's geometry: the selected components with their sizes, the
// spec's schedule, and the plan's checks as submission errors naming the spec's fields.
TEST(SparsifyPlannerTest, APlanComesFromTheSpecAndTheModelsGeometry) {
  StatusOr<JobSpec> spec = ParseJobSpec(
      "kind: sparsify\nmodel: /m\nprobes: p\ncompletion: 64\nsparsify:\n  output: /runs/x\n"
      "  schedule: [0.3, 0.2]\n  components: ['*.mlp.*']\ntrain:\n  data: d\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  ModelGeometry geometry;
  geometry.num_layers = kLayers;
  for (int layer = 0; layer < kLayers; ++layer) {
    for (const char* kind : {"self_attn.q_proj", "mlp.up_proj", "mlp.down_proj", "mlp.gate_proj"}) {
      geometry.component_params["model.layers." + std::to_string(layer) + "." + kind] = 1000;
    }
  }
  StatusOr<SparsifyRunPlan> plan = SparsifyRunPlanOf(*spec, geometry, {});
  ASSERT_TRUE(plan.ok()) << plan.status().ToString();
  EXPECT_EQ(plan->output, "/runs/x");
  EXPECT_THAT(plan->schedule, ElementsAre(0.3, 0.2));
  EXPECT_EQ(plan->components.size(), 6u);  // the mlp components of both layers
  EXPECT_EQ(plan->completion_len, 64);
  for (const auto& c : plan->components) {
    EXPECT_THAT(c.name, HasSubstr(".mlp."));
    EXPECT_EQ(c.current, 0.0);
  }
  // A component whose size nobody reported cannot be allocated.
  geometry.component_params.erase("model.layers.1.mlp.down_proj");
  StatusOr<SparsifyRunPlan> unknown = SparsifyRunPlanOf(*spec, geometry, {});
  ASSERT_FALSE(unknown.ok());
  EXPECT_THAT(unknown.status().message(), HasSubstr("model.layers.1.mlp.down_proj is unknown"));
  // A glob that matches nothing is named.
  spec->components = {"*.lm_head"};
  StatusOr<SparsifyRunPlan> none = SparsifyRunPlanOf(*spec, geometry, {});
  ASSERT_FALSE(none.ok());
  EXPECT_THAT(none.status().message(), HasSubstr("sparsify.components[0] '*.lm_head'"));
}

// Stage jobs are named after their run, and only they map back to it.
TEST(SparsifyPlannerTest, AStageJobsRequestIdNamesItsRun) {
  const std::string id = SparsifyStageRequestId("j-0123456789abcdef0123", 3, SparsifyStage::kTrain);
  EXPECT_EQ(id, "j-0123456789abcdef0123/round-3/train");
  EXPECT_EQ(SparsifyRunOfStage(id), "j-0123456789abcdef0123");
  EXPECT_EQ(SparsifyRunOfStage("6f1c2f0e-uuid-of-a-client"), "");
  EXPECT_EQ(SparsifyRunOfStage("my-own/round-2/probe"), "");  // a client's id is not a run's stage
}

}  // namespace
}  // namespace dtm
