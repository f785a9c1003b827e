#include "coordinator/quant_search.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "common/sha256.h"

namespace dtm {
namespace {

using Evaluated = std::map<std::string, v1::Metrics>;

const std::vector<std::string> kComponents = {"c.a", "c.b", "c.c", "c.d", "c.e"};

// Made-up but deterministic metrics of a config, with many ties in fdt75 (and some in fdt_mean) so
// that the tie rules matter.
v1::Metrics FakeMetrics(const std::string& config) {
  const std::string h = Sha256Hex(config);
  v1::Metrics m;
  m.set_fdt75(static_cast<double>(std::stoi(h.substr(0, 2), nullptr, 16) % 4));
  m.set_fdt_mean(static_cast<double>(std::stoi(h.substr(2, 2), nullptr, 16) % 3));
  m.set_dppl(1.0 + static_cast<double>(std::stoi(h.substr(4, 2), nullptr, 16) % 5));
  m.set_ppl(2.0 + static_cast<double>(std::stoi(h.substr(6, 2), nullptr, 16) % 5));
  return m;
}

std::string ConfigOf(const std::vector<std::string>& components, const std::string& method) {
  std::vector<std::string> sorted = components;
  std::sort(sorted.begin(), sorted.end());
  std::string out;
  for (const std::string& c : sorted) out += (out.empty() ? "" : ",") + c + "=" + method;
  return out;
}

// Runs the driver to its end, answering each stage with `metrics`; returns the stages it asked for.
std::vector<std::vector<std::string>> RunToEnd(QuantSearchDriver& driver, Evaluated* evaluated,
                                               const std::function<v1::Metrics(const std::string&)>& metrics) {
  std::vector<std::vector<std::string>> stages;
  for (int guard = 0; guard < 100; ++guard) {
    StatusOr<std::optional<std::vector<std::string>>> next = driver.NextStage(*evaluated);
    EXPECT_TRUE(next.ok());
    if (!next.ok() || !next->has_value()) return stages;
    stages.push_back(**next);
    for (const std::string& config : **next) (*evaluated)[config] = metrics(config);
  }
  ADD_FAILURE() << "the search did not end";
  return stages;
}

// Every k-subset of `items`, in lexicographic index order.
void Subsets(const std::vector<std::string>& items, size_t k, size_t from, std::vector<std::string>* current,
             std::vector<std::vector<std::string>>* out) {
  if (current->size() == k) {
    out->push_back(*current);
    return;
  }
  for (size_t i = from; i < items.size(); ++i) {
    current->push_back(items[i]);
    Subsets(items, k, i + 1, current, out);
    current->pop_back();
  }
}

std::vector<std::string> LevelConfigs(const std::vector<v1::ConfigResult>& rows, uint32_t level) {
  std::vector<std::string> out;
  for (const v1::ConfigResult& row : rows) {
    if (row.search_level() == level) out.push_back(row.config());
  }
  return out;
}

// SPEC's order for each ranking metric, written out again here (not RanksBefore): fdt75 higher first,
// ties by fdt_mean (higher), dppl (lower), config; dppl and ppl lower first, ties by config.
bool ExpectedBefore(RankMetric metric, const std::string& a, const std::string& b) {
  const v1::Metrics ma = FakeMetrics(a), mb = FakeMetrics(b);
  if (metric == RankMetric::kDppl) return ma.dppl() != mb.dppl() ? ma.dppl() < mb.dppl() : a < b;
  if (metric == RankMetric::kPpl) return ma.ppl() != mb.ppl() ? ma.ppl() < mb.ppl() : a < b;
  if (ma.fdt75() != mb.fdt75()) return ma.fdt75() > mb.fdt75();
  if (ma.fdt_mean() != mb.fdt_mean()) return ma.fdt_mean() > mb.fdt_mean();
  if (ma.dppl() != mb.dppl()) return ma.dppl() < mb.dppl();
  return a < b;
}

class QuantSearchRankTest : public ::testing::TestWithParam<RankMetric> {};

// With a beam at least as wide as any level (C(5,2) = C(5,3) = 10), the beam keeps every node, so
// each level's result must be the best nodes among ALL sets of that size: an exhaustive ranking by
// the search's metric that shares no code with the driver's expansion.
TEST_P(QuantSearchRankTest, AWideBeamFindsTheExhaustiveBestOfEveryLevel) {
  const RankMetric metric = GetParam();
  QuantSearchDriver driver(kComponents, "int8-absmax", 10, 5, metric);
  Evaluated evaluated;
  RunToEnd(driver, &evaluated, FakeMetrics);
  const std::vector<v1::ConfigResult> rows = driver.Results(evaluated);
  for (size_t level = 1; level <= kComponents.size(); ++level) {
    std::vector<std::vector<std::string>> sets;
    std::vector<std::string> current;
    Subsets(kComponents, level, 0, &current, &sets);
    std::vector<std::string> configs;
    for (const auto& set : sets) configs.push_back(ConfigOf(set, "int8-absmax"));
    std::sort(configs.begin(), configs.end(),
              [&](const std::string& a, const std::string& b) { return ExpectedBefore(metric, a, b); });
    configs.resize(std::min<size_t>(configs.size(), 10));
    EXPECT_EQ(LevelConfigs(rows, level), configs) << "level " << level;
  }
}

// A narrow beam: each level's beam is the best `beam` among the children of the previous beam, by
// the metric, found here by expanding and ranking independently of the driver.
TEST_P(QuantSearchRankTest, ANarrowBeamKeepsTheBestChildrenByTheMetric) {
  const RankMetric metric = GetParam();
  QuantSearchDriver driver(kComponents, "int8-absmax", 2, 4, metric);
  Evaluated evaluated;
  RunToEnd(driver, &evaluated, FakeMetrics);
  const std::vector<v1::ConfigResult> rows = driver.Results(evaluated);
  std::vector<std::vector<std::string>> beam = {{}};
  for (uint32_t level = 1; level <= 4; ++level) {
    std::map<std::string, std::vector<std::string>> children;  // config -> its components
    for (const std::vector<std::string>& parent : beam) {
      for (const std::string& c : kComponents) {
        if (std::find(parent.begin(), parent.end(), c) != parent.end()) continue;
        std::vector<std::string> child = parent;
        child.push_back(c);
        std::sort(child.begin(), child.end());
        children[ConfigOf(child, "int8-absmax")] = child;
      }
    }
    std::vector<std::string> ranked;
    for (const auto& [config, set] : children) ranked.push_back(config);
    std::sort(ranked.begin(), ranked.end(),
              [&](const std::string& a, const std::string& b) { return ExpectedBefore(metric, a, b); });
    ranked.resize(std::min<size_t>(ranked.size(), 2));
    EXPECT_EQ(LevelConfigs(rows, level), ranked) << "level " << level;
    beam.clear();
    for (const std::string& config : ranked) beam.push_back(children[config]);
  }
}

INSTANTIATE_TEST_SUITE_P(EveryRankMetric, QuantSearchRankTest,
                         ::testing::Values(RankMetric::kFdt75, RankMetric::kDppl, RankMetric::kPpl),
                         [](const ::testing::TestParamInfo<RankMetric>& info) { return RankMetricName(info.param); });

// The two searches disagree on these metrics somewhere, or the tests above could not tell them apart.
TEST(QuantSearchTest, RankingByDpplPicksOtherNodesThanByFdt75) {
  Evaluated by_fdt, by_dppl;
  QuantSearchDriver fdt(kComponents, "int8-absmax", 2, 3, RankMetric::kFdt75);
  QuantSearchDriver dppl(kComponents, "int8-absmax", 2, 3, RankMetric::kDppl);
  RunToEnd(fdt, &by_fdt, FakeMetrics);
  RunToEnd(dppl, &by_dppl, FakeMetrics);
  EXPECT_NE(LevelConfigs(fdt.Results(by_fdt), 1), LevelConfigs(dppl.Results(by_dppl), 1));
}

TEST(QuantSearchTest, ExpandsOnlyTheBeamAndEvaluatesEachSetOnce) {
  QuantSearchDriver driver(kComponents, "int8-absmax", 2, 3);
  Evaluated evaluated;
  const auto stages = RunToEnd(driver, &evaluated, FakeMetrics);
  ASSERT_EQ(stages.size(), 3u);
  EXPECT_EQ(stages[0].size(), 5u);  // every single component
  const std::vector<v1::ConfigResult> rows = driver.Results(evaluated);
  for (size_t level = 1; level < stages.size(); ++level) {
    // The children of the two kept nodes, each set once: 2 x 4 = 8 pairs minus the one they share.
    const std::vector<std::string> beam = LevelConfigs(rows, static_cast<uint32_t>(level));
    ASSERT_EQ(beam.size(), 2u);
    std::set<std::string> want;
    for (const std::string& parent : beam) {
      for (const std::string& component : kComponents) {
        if (parent.find(component + "=") != std::string::npos) continue;
        std::vector<std::string> set = {component};
        for (const std::string& c : kComponents) {
          if (parent.find(c + "=") != std::string::npos) set.push_back(c);
        }
        want.insert(ConfigOf(set, "int8-absmax"));
      }
    }
    std::vector<std::string> stage = stages[level];
    EXPECT_EQ(std::set<std::string>(stage.begin(), stage.end()).size(), stage.size()) << "a set asked twice";
    EXPECT_EQ(std::set<std::string>(stage.begin(), stage.end()), want) << "level " << level + 1;
  }
}

TEST(QuantSearchTest, RanksByFdt75ThenFdtMeanThenDpplThenConfig) {
  QuantSearchDriver driver({"c.a", "c.b", "c.c", "c.d", "c.e"}, "int8-absmax", 4, 1);
  const std::map<std::string, std::tuple<double, double, double>> given = {
      {"c.a=int8-absmax", {10, 5, 2.0}}, {"c.b=int8-absmax", {12, 1, 9.0}}, {"c.c=int8-absmax", {10, 7, 3.0}},
      {"c.d=int8-absmax", {10, 5, 2.0}}, {"c.e=int8-absmax", {10, 5, 1.5}}};
  Evaluated evaluated;
  RunToEnd(driver, &evaluated, [&](const std::string& config) {
    v1::Metrics m;
    m.set_fdt75(std::get<0>(given.at(config)));
    m.set_fdt_mean(std::get<1>(given.at(config)));
    m.set_dppl(std::get<2>(given.at(config)));
    return m;
  });
  const std::vector<v1::ConfigResult> rows = driver.Results(evaluated);
  EXPECT_EQ(LevelConfigs(rows, 1), (std::vector<std::string>{"c.b=int8-absmax", "c.c=int8-absmax",
                                                             "c.e=int8-absmax", "c.a=int8-absmax"}));
  for (size_t i = 0; i < rows.size(); ++i) EXPECT_EQ(rows[i].rank(), i);
}

// Issue 13: a beam whose last place only the config string decided says so; one the metrics decided
// does not.
TEST(QuantSearchTest, WarnsWhenTheConfigStringAloneDecidedTheBeamsLastPlace) {
  const std::map<std::string, std::tuple<double, double, double>> given = {
      {"c.a=int8-absmax", {10, 5, 2.0}}, {"c.b=int8-absmax", {12, 1, 9.0}}, {"c.c=int8-absmax", {10, 7, 3.0}},
      {"c.d=int8-absmax", {10, 5, 2.0}}, {"c.e=int8-absmax", {10, 5, 1.5}}};
  auto metrics = [&](const std::string& config) {
    v1::Metrics m;
    m.set_fdt75(std::get<0>(given.at(config)));
    m.set_fdt_mean(std::get<1>(given.at(config)));
    m.set_dppl(std::get<2>(given.at(config)));
    return m;
  };
  // Ranked b, c, e, a, d: a and d tie on every metric.
  QuantSearchDriver four({"c.a", "c.b", "c.c", "c.d", "c.e"}, "int8-absmax", 4, 1);
  Evaluated evaluated;
  RunToEnd(four, &evaluated, metrics);
  const std::vector<std::string> warnings = four.Warnings(evaluated);
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_THAT(warnings[0], ::testing::HasSubstr("level 1: the beam's last place went to 'c.a=int8-absmax' over "
                                                "'c.d=int8-absmax' by the config string alone (equal fdt75, "
                                                "fdt_mean and dppl)"));
  // A beam of 3 ends between e and a, which dppl separates; a beam of 5 keeps every node.
  for (int beam : {3, 5}) {
    QuantSearchDriver driver({"c.a", "c.b", "c.c", "c.d", "c.e"}, "int8-absmax", beam, 1);
    Evaluated other;
    RunToEnd(driver, &other, metrics);
    EXPECT_TRUE(driver.Warnings(other).empty()) << "beam " << beam;
  }
  // Ranked by dppl alone, a and d tie too, and c.c (3.0) is separated from them.
  QuantSearchDriver by_dppl({"c.a", "c.b", "c.c", "c.d", "c.e"}, "int8-absmax", 2, 1, RankMetric::kDppl);
  Evaluated dppl;
  RunToEnd(by_dppl, &dppl, metrics);
  ASSERT_EQ(by_dppl.Warnings(dppl).size(), 1u);  // ranked e, a, d, c, b: a over d
  EXPECT_THAT(by_dppl.Warnings(dppl)[0], ::testing::HasSubstr("(equal dppl)"));
}

// The whole job's ETA counts the levels not yet opened: an upper bound on their nodes, exact where
// no two beam nodes share a child.
TEST(QuantSearchTest, BoundsTheNodesOfTheLevelsNotYetOpened) {
  QuantSearchDriver driver(kComponents, "int8-absmax", 2, 3);
  Evaluated evaluated;
  // Before level 1: levels 2 (2 x 4 = 8 < 5 choose 2 = 10) and 3 (2 x 3 = 6 < 10).
  EXPECT_EQ(driver.LaterConfigs(evaluated), 14u);
  const auto stages = RunToEnd(driver, &evaluated, FakeMetrics);
  ASSERT_EQ(stages.size(), 3u);
  // Replayed stage by stage: each bound covers what came after the next stage.
  Evaluated so_far;
  for (size_t i = 0; i < stages.size(); ++i) {
    uint64_t later = 0;
    for (size_t j = i + 1; j < stages.size(); ++j) later += stages[j].size();
    EXPECT_GE(driver.LaterConfigs(so_far), later) << "before stage " << i;
    for (const std::string& config : stages[i]) so_far[config] = evaluated.at(config);
  }
  EXPECT_EQ(driver.LaterConfigs(so_far), 0u);
  // A small set of components caps a level at its number of sets: 3 choose 3 = 1, not 4 x 1.
  QuantSearchDriver few({"c.a", "c.b", "c.c"}, "int8-absmax", 4, 0);
  EXPECT_EQ(few.LaterConfigs({}), 3u + 1u);  // level 2: min(4 x 2, 3); level 3: min(4 x 1, 1)
}

TEST(QuantSearchTest, ReportsTheUncompressedModelAsLevelZeroAndStopsAtTheFullSet) {
  QuantSearchDriver driver({"c.a", "c.b"}, "prune:0.5", 4, 2);
  Evaluated evaluated;
  evaluated[""] = FakeMetrics("");  // the noise floor, evaluated by the scheduler
  const auto stages = RunToEnd(driver, &evaluated, FakeMetrics);
  ASSERT_EQ(stages.size(), 2u);
  EXPECT_EQ(stages[1], std::vector<std::string>{"c.a=prune:0.5,c.b=prune:0.5"});
  const std::vector<v1::ConfigResult> rows = driver.Results(evaluated);
  ASSERT_FALSE(rows.empty());
  EXPECT_EQ(rows[0].config(), "");
  EXPECT_EQ(rows[0].search_level(), 0u);
  EXPECT_EQ(LevelConfigs(rows, 2), std::vector<std::string>{"c.a=prune:0.5,c.b=prune:0.5"});
}

TEST(QuantSearchTest, ProgressNamesTheLevelUnderWayAndTheBestNodeSoFar) {
  QuantSearchDriver driver(kComponents, "int8-absmax", 2, 3);
  Evaluated evaluated;
  v1::JobProgress progress;
  driver.FillProgress(evaluated, &progress);
  EXPECT_EQ(progress.search_level(), 1u);
  EXPECT_FALSE(progress.has_best_fdt75());

  auto first = driver.NextStage(evaluated);
  ASSERT_TRUE(first.ok() && first->has_value());
  for (const std::string& config : **first) evaluated[config] = FakeMetrics(config);
  driver.FillProgress(evaluated, &progress);
  EXPECT_EQ(progress.search_level(), 2u);
  const std::vector<std::string> level1 = LevelConfigs(driver.Results(evaluated), 1);
  ASSERT_FALSE(level1.empty());
  EXPECT_EQ(progress.best_config(), level1[0]);
  EXPECT_EQ(progress.best_fdt75(), FakeMetrics(level1[0]).fdt75());
}

TEST(QuantSearchTest, CountsEachLevelsNodesAndThoseFromTheCache) {
  QuantSearchDriver driver(kComponents, "int8-absmax", 2, 3);
  Evaluated evaluated;
  const auto stages = RunToEnd(driver, &evaluated, FakeMetrics);
  ASSERT_EQ(stages.size(), 3u);
  // Say the first level's nodes and one of the second's came from the cache.
  std::set<std::string> cached(stages[0].begin(), stages[0].end());
  cached.insert(stages[1][0]);
  const std::vector<v1::SearchLevel> levels = driver.SearchLevels(evaluated, cached);
  ASSERT_EQ(levels.size(), 3u);
  for (size_t i = 0; i < levels.size(); ++i) {
    EXPECT_EQ(levels[i].level(), i + 1);
    EXPECT_EQ(levels[i].nodes(), stages[i].size());
  }
  EXPECT_EQ(levels[0].nodes_cached(), 5u);
  EXPECT_EQ(levels[1].nodes_cached(), 1u);
  EXPECT_EQ(levels[2].nodes_cached(), 0u);
}

TEST(QuantSearchTest, ReplaysTheSameStagesFromTheSameMetrics) {
  // A restarted coordinator builds a fresh driver: it must ask for exactly what the first one did.
  QuantSearchDriver first(kComponents, "int8-absmax", 3, 4);
  Evaluated evaluated;
  const auto stages = RunToEnd(first, &evaluated, FakeMetrics);
  QuantSearchDriver second(kComponents, "int8-absmax", 3, 4);
  Evaluated replayed;
  for (const auto& stage : stages) {
    auto next = second.NextStage(replayed);
    ASSERT_TRUE(next.ok() && next->has_value());
    EXPECT_EQ(**next, stage);
    for (const std::string& config : stage) replayed[config] = evaluated.at(config);
  }
  auto end = second.NextStage(replayed);
  ASSERT_TRUE(end.ok());
  EXPECT_FALSE(end->has_value());
}

// Each child of a level is told the node it extends (Task.parent_config), so that a worker keeps
// that node's residual streams for its siblings: the best-ranked beam node holding all but one of
// its components; level 1 extends the uncompressed model (no entry).
TEST(QuantSearchTest, StageParentsNameTheBestRankedBeamNodeEachChildExtends) {
  QuantSearchDriver driver(kComponents, "int8-absmax", 2, 3);
  Evaluated evaluated;
  for (const auto& [child, parent] : driver.StageParents(evaluated)) EXPECT_EQ(parent, "") << child;
  StatusOr<std::optional<std::vector<std::string>>> level1 = driver.NextStage(evaluated);
  ASSERT_TRUE(level1.ok() && level1->has_value());
  for (const std::string& config : **level1) evaluated[config] = FakeMetrics(config);
  const std::vector<v1::ConfigResult> ranked = driver.Results(evaluated);
  const std::vector<std::string> beam = LevelConfigs(ranked, 1);
  ASSERT_EQ(beam.size(), 2u);
  StatusOr<std::optional<std::vector<std::string>>> level2 = driver.NextStage(evaluated);
  ASSERT_TRUE(level2.ok() && level2->has_value());
  const std::map<std::string, std::string> parents = driver.StageParents(evaluated);
  ASSERT_EQ(parents.size(), (*level2)->size());
  for (const std::string& child : **level2) {
    ASSERT_EQ(parents.count(child), 1u) << child;
    const std::string& parent = parents.at(child);
    // The parent is a beam node the child contains, and the best such one.
    std::string expected;
    for (const std::string& node : beam) {
      if (("," + child + ",").find("," + node + ",") != std::string::npos) {
        expected = node;
        break;
      }
    }
    EXPECT_EQ(parent, expected) << child;
  }
}

}  // namespace
}  // namespace dtm
