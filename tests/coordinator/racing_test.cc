// Probe racing: the order-statistic bounds against an independent binomial computation and their
// coverage on known distributions, the drop rule on hand-made metrics, and the quant-search and
// probe-job races on synthetic per-probe FDTs against the exact search.
#include "coordinator/racing.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "coordinator/aggregate.h"
#include "coordinator/job_driver.h"
#include "coordinator/job_spec.h"
#include "coordinator/quant_search.h"

namespace dtm {
namespace {

using Evaluated = std::map<std::string, v1::Metrics>;
using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::UnorderedElementsAre;

constexpr int64_t kCompletion = 64;

// Metrics of per-probe FDT values, through the coordinator's own aggregation.
v1::Metrics MetricsOf(const std::vector<int>& fdts, int64_t completion = kCompletion) {
  std::vector<v1::ProbeResult> results;
  for (size_t i = 0; i < fdts.size(); ++i) {
    v1::ProbeResult r;
    r.set_probe_index(static_cast<uint32_t>(i));
    r.set_fdt(static_cast<uint32_t>(fdts[i]));
    r.set_sdt(fdts[i] == completion ? 0 : 1);
    r.set_nll(1.0);
    results.push_back(r);
  }
  StatusOr<v1::Metrics> m = AggregateProbeResults(results, completion);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return *m;
}

// P(Bin(n, 0.75) >= k) by exact products of binomial coefficients (long double), the way a textbook
// states it: independent of racing.cc's log-gamma sums.
long double UpperTail(int n, int k) {
  long double sum = 0;
  for (int j = k; j <= n; ++j) {
    long double c = 1;
    for (int i = 1; i <= j; ++i) c = c * (n - j + i) / i;
    sum += c * std::pow(0.75L, j) * std::pow(0.25L, n - j);
  }
  return sum;
}

TEST(Fdt75BoundsTest, OrderStatisticsMatchAnIndependentBinomialComputation) {
  for (int n : {1, 2, 5, 16, 40, 100}) {
    for (double confidence : {0.8, 0.95, 0.99}) {
      std::vector<int> fdts(n);
      for (int i = 0; i < n; ++i) fdts[i] = i % (kCompletion + 1);  // distinct where n allows
      std::vector<int> sorted = fdts;
      std::sort(sorted.begin(), sorted.end());
      int lower_k = 0;  // largest k with P(Bin >= k) >= confidence
      for (int k = 1; k <= n; ++k) {
        if (UpperTail(n, k) >= confidence) lower_k = k;
      }
      int upper_k = 0;  // smallest k with P(Bin <= k - 1) = 1 - P(Bin >= k) >= confidence
      for (int k = n; k >= 1; --k) {
        if (1 - UpperTail(n, k) >= confidence) upper_k = k;
      }
      const QuantileBounds b = Fdt75Bounds(MetricsOf(fdts), confidence, kCompletion);
      SCOPED_TRACE("n " + std::to_string(n) + ", confidence " + std::to_string(confidence));
      EXPECT_EQ(b.lower, lower_k == 0 ? 0 : sorted[lower_k - 1]);
      EXPECT_EQ(b.upper, upper_k == 0 ? kCompletion : sorted[upper_k - 1]);
    }
  }
  // Known case: 16 probes at 0.95: X_(9) <= q75 (P(Bin(16, .75) >= 9) = 0.973, >= 10: 0.925) and no
  // order statistic bounds it from above (P(Bin <= 15) = 0.990 needs k = 16, the maximum).
  std::vector<int> fdts;
  for (int i = 1; i <= 16; ++i) fdts.push_back(i);
  const QuantileBounds b = Fdt75Bounds(MetricsOf(fdts), 0.95, kCompletion);
  EXPECT_EQ(b.lower, 9);
  EXPECT_EQ(b.upper, 16);
  EXPECT_EQ(Fdt75Bounds(MetricsOf(fdts), 0.995, kCompletion).upper, kCompletion);  // P(Bin <= 15) < .995
  EXPECT_EQ(Fdt75Bounds(v1::Metrics(), 0.95, kCompletion).lower, 0);
}

TEST(Fdt75BoundsTest, CoverTheTrueQuantileAtLeastAsOftenAsPromised) {
  // Discrete distributions with atoms at the quantile (where naive bounds break), and a smooth one.
  struct Case {
    std::vector<int> support;
    std::vector<double> weights;
  };
  const std::vector<Case> cases = {
      {{0, 10, 20, 30, 64}, {0.1, 0.2, 0.45, 0.15, 0.1}},
      {{5, 6}, {0.75, 0.25}},
      {{0, 64}, {0.3, 0.7}},
  };
  std::mt19937_64 rng(7);
  for (const Case& c : cases) {
    // The population 0.75 quantile: the smallest value whose CDF reaches 0.75.
    double cdf = 0;
    int q = c.support.back();
    for (size_t i = 0; i < c.support.size(); ++i) {
      cdf += c.weights[i];
      if (cdf >= 0.75 - 1e-12) {
        q = c.support[i];
        break;
      }
    }
    std::discrete_distribution<size_t> pick(c.weights.begin(), c.weights.end());
    for (int n : {16, 50, 200}) {
      const int trials = 2000;
      int lower_misses = 0;
      int upper_misses = 0;
      for (int t = 0; t < trials; ++t) {
        std::vector<int> fdts;
        for (int i = 0; i < n; ++i) fdts.push_back(c.support[pick(rng)]);
        const QuantileBounds b = Fdt75Bounds(MetricsOf(fdts), 0.9, kCompletion);
        lower_misses += b.lower > q;
        upper_misses += b.upper < q;
      }
      // Each bound misses at most 10 % of the time; 2000 trials put 3 standard deviations at 2 %.
      EXPECT_LE(lower_misses, trials * 0.12) << "n " << n << ", q " << q;
      EXPECT_LE(upper_misses, trials * 0.12) << "n " << n << ", q " << q;
    }
  }
}

RaceSettings Settings(uint32_t total, uint32_t first, uint32_t step, double confidence = 0.95) {
  RaceSettings s;
  s.options.first = first;
  s.options.step = step;
  s.options.confidence = confidence;
  s.total_probes = total;
  s.completion_len = kCompletion;
  return s;
}

std::vector<int> Constant(int value, int n) { return std::vector<int>(n, value); }

TEST(RaceTest, UnevaluatedCandidatesNeedTheFirstGroup) {
  const RaceState s = Race({"a", "b"}, {{"a", MetricsOf(Constant(3, 16))}}, 1, Settings(100, 16, 16), false);
  EXPECT_FALSE(s.decided());
  EXPECT_EQ(s.need, (std::map<std::string, uint32_t>{{"b", 16}}));
  // A first group larger than the probe set is the probe set.
  EXPECT_EQ(Race({"a"}, {}, 1, Settings(10, 16, 16), false).need.at("a"), 10u);
}

TEST(RaceTest, DropsThoseWhoseUpperBoundIsBelowTheKeepthBestLowerBound) {
  // 16 probes at 0.95: lower = X_(9), upper = X_(16) (the maximum).
  Evaluated e;
  e["a"] = MetricsOf(Constant(50, 16));  // [50, 50]
  e["b"] = MetricsOf(Constant(40, 16));  // [40, 40]
  std::vector<int> wide = Constant(10, 8);
  wide.insert(wide.end(), 8, 45);
  e["c"] = MetricsOf(wide);               // [45, 45]: X_(9) = 45
  e["d"] = MetricsOf(Constant(39, 16));  // [39, 39]
  std::vector<int> spread = Constant(5, 15);
  spread.push_back(42);
  e["e"] = MetricsOf(spread);  // [5, 42]
  // keep 2: the bar is the 2nd best lower bound, 45; b (40), d (39) and e (42) are below it.
  RaceState s = Race({"a", "b", "c", "d", "e"}, e, 2, Settings(64, 16, 16), false);
  EXPECT_THAT(s.dropped, ElementsAre("b", "d", "e"));
  EXPECT_THAT(s.alive, ElementsAre("a", "c"));
  EXPECT_TRUE(s.decided());  // two alive for two places
  // The last level completes its kept ones on every probe.
  s = Race({"a", "b", "c", "d", "e"}, e, 2, Settings(64, 16, 16), true);
  EXPECT_EQ(s.need, (std::map<std::string, uint32_t>{{"a", 64}, {"c", 64}}));
  // keep 3: the bar is 40; only d (39) is below. Four alive for three places: each gets a step more.
  s = Race({"a", "b", "c", "d", "e"}, e, 3, Settings(64, 16, 16), false);
  EXPECT_THAT(s.dropped, ElementsAre("d"));
  EXPECT_EQ(s.need, (std::map<std::string, uint32_t>{{"a", 32}, {"b", 32}, {"c", 32}, {"e", 32}}));
  // An upper bound equal to the bar is not below it.
  e["d"] = MetricsOf(Constant(40, 16));
  EXPECT_THAT(Race({"a", "b", "c", "d", "e"}, e, 3, Settings(64, 16, 16), false).dropped, IsEmpty());
}

TEST(RaceTest, TiesThatNoProbeSeparatesRunToEveryProbeAndThenDecide) {
  Evaluated e = {{"a", MetricsOf(Constant(7, 30))}, {"b", MetricsOf(Constant(7, 30))}, {"c", MetricsOf(Constant(7, 30))}};
  RaceState s = Race({"a", "b", "c"}, e, 1, Settings(40, 16, 16), false);
  EXPECT_EQ(s.need, (std::map<std::string, uint32_t>{{"a", 40}, {"b", 40}, {"c", 40}}));  // capped at the set
  for (auto& [name, m] : e) m = MetricsOf(Constant(7, 40));
  s = Race({"a", "b", "c"}, e, 1, Settings(40, 16, 16), false);
  EXPECT_TRUE(s.decided());
  EXPECT_THAT(s.alive, ElementsAre("a", "b", "c"));  // the caller's ranking decides among them
}

TEST(RaceTest, ACandidateThatSawEveryProbeIsRankedNotDropped) {
  // b is below the bar (50) but has seen all 16 probes: it skipped nothing, so it is not "dropped".
  Evaluated e = {{"a", MetricsOf(Constant(50, 16))}, {"b", MetricsOf(Constant(40, 16))}, {"c", MetricsOf(Constant(30, 8))}};
  // At 0.8 the upper bound of 8 probes is their maximum (P(Bin(8, .75) <= 7) = 0.90).
  const RaceState s = Race({"a", "b", "c"}, e, 1, Settings(16, 8, 8, 0.8), false);
  EXPECT_THAT(s.dropped, ElementsAre("c"));
  EXPECT_THAT(s.alive, ElementsAre("a", "b"));
  EXPECT_TRUE(s.decided());  // every one alive saw every probe
}

TEST(RaceTest, ADroppedCandidateComesBackWhenTheBarFalls) {
  Evaluated e = {{"a", MetricsOf(Constant(50, 16))}, {"b", MetricsOf(Constant(40, 16))}, {"c", MetricsOf(Constant(45, 16))}};
  EXPECT_THAT(Race({"a", "b", "c"}, e, 2, Settings(128, 16, 48), false).dropped, ElementsAre("b"));
  // c's next 48 probes, all at 30, pull its lower bound (X_(42) of 64 at 0.95) to 30: b's 40 is no
  // longer below the bar, and b races on from its 16 probes.
  std::vector<int> c = Constant(45, 16);
  c.insert(c.end(), 48, 30);
  e["c"] = MetricsOf(c);
  EXPECT_EQ(Fdt75Bounds(e["c"], 0.95, kCompletion).lower, 30);
  const RaceState s = Race({"a", "b", "c"}, e, 2, Settings(128, 16, 48), false);
  EXPECT_THAT(s.dropped, IsEmpty());
  EXPECT_EQ(s.need.at("b"), 64u);
}

RaceSettings WithEpsilon(RaceSettings s, double epsilon) {
  s.options.epsilon = epsilon;
  return s;
}

TEST(RaceTest, EpsilonDropsThoseThatCanBeatTheLastLeaderByLessThanIt) {
  // 16 probes at 0.95: lower = X_(9), upper = X_(16). a and b tie on the lower bound (50); b leads on
  // fdt75 (X_(12..13) = 53), so b leads for the one place, and a's upper bound (50) is the bar itself.
  std::vector<int> b = Constant(50, 9);
  b.insert(b.end(), 7, 53);
  Evaluated e = {{"a", MetricsOf(Constant(50, 16))}, {"b", MetricsOf(b)}, {"c", MetricsOf(Constant(49, 16))}};
  ASSERT_EQ(Fdt75Bounds(e["b"], 0.95, kCompletion).lower, 50);
  ASSERT_EQ(e["b"].fdt75(), 53);
  // epsilon 0: only c (49 < 50) goes; a's upper bound equals the bar, so a and b race on.
  RaceState s = Race({"a", "b", "c"}, e, 1, Settings(64, 16, 16), false);
  EXPECT_THAT(s.dropped, ElementsAre("c"));
  EXPECT_EQ(s.need, (std::map<std::string, uint32_t>{{"a", 32}, {"b", 32}}));
  // epsilon 1: a's 50 is below 50 + 1 too; b alone is left for the place.
  s = Race({"a", "b", "c"}, e, 1, WithEpsilon(Settings(64, 16, 16), 1), false);
  EXPECT_THAT(s.dropped, ElementsAre("a", "c"));
  EXPECT_THAT(s.alive, ElementsAre("b"));
  EXPECT_TRUE(s.decided());
  // A candidate whose upper bound is 1 above the bar stays at epsilon 1 and goes at epsilon 2.
  std::vector<int> a = Constant(50, 15);
  a.push_back(51);
  e["a"] = MetricsOf(a);  // [50, 51], fdt75 50
  EXPECT_THAT(Race({"a", "b", "c"}, e, 1, WithEpsilon(Settings(64, 16, 16), 1), false).dropped,
              ElementsAre("c"));
  EXPECT_THAT(Race({"a", "b", "c"}, e, 1, WithEpsilon(Settings(64, 16, 16), 2), false).dropped,
              ElementsAre("a", "c"));
}

TEST(RaceTest, EpsilonNeverDropsALeaderNorOneThatSawEveryProbe) {
  Evaluated e = {{"a", MetricsOf(Constant(30, 16))}, {"b", MetricsOf(Constant(31, 16))},
                 {"c", MetricsOf(Constant(29, 32))}, {"d", MetricsOf(Constant(10, 16))}};
  // An epsilon as wide as the completion: every candidate outside the two leaders (b, a) that is
  // short of every probe is dropped at once; c saw all 32 and is ranked instead.
  const RaceState s = Race({"a", "b", "c", "d"}, e, 2, WithEpsilon(Settings(32, 16, 16), kCompletion), false);
  EXPECT_THAT(s.dropped, ElementsAre("d"));
  EXPECT_THAT(s.alive, ElementsAre("a", "b", "c"));
  EXPECT_EQ(s.need, (std::map<std::string, uint32_t>{{"a", 32}, {"b", 32}}));
}

TEST(RaceCostTest, CountsProbesAndDropsByProbeCount) {
  Evaluated e = {{"a", MetricsOf(Constant(5, 64))}, {"b", MetricsOf(Constant(5, 16))},
                 {"c", MetricsOf(Constant(5, 32))}, {"d", MetricsOf(Constant(5, 16))}};
  const RaceCost cost = CostOf({"a", "b", "c", "d"}, {"b", "c", "d"}, e, 64);
  EXPECT_EQ(cost.probe_evaluations, 64u + 16 + 32 + 16);
  EXPECT_EQ(cost.exact, 4u * 64);
  EXPECT_EQ(cost.nodes_dropped, 3u);
  ASSERT_EQ(cost.drops.size(), 2u);
  EXPECT_EQ(cost.drops[0].probes(), 16u);
  EXPECT_EQ(cost.drops[0].nodes(), 2u);
  EXPECT_EQ(cost.drops[1].probes(), 32u);
  v1::RacingSummary summary;
  AddCost(cost, &summary);
  AddCost(cost, &summary);
  EXPECT_EQ(summary.probe_evaluations(), 2 * cost.probe_evaluations);
  EXPECT_EQ(summary.nodes_dropped(), 6u);
  ASSERT_EQ(summary.drops_size(), 2);
  EXPECT_EQ(summary.drops(0).nodes(), 4u);
}

// --- the drivers, on synthetic probes -------------------------------------------------------------

constexpr uint32_t kProbes = 256;
constexpr uint32_t kShard = 16;

// Each component has a fragility; a config's FDT on probe i is drawn around a level that falls with
// the sum of its components' fragilities, from a per-(config, probe) seed: a fixed "model".
int SyntheticFdt(const std::string& config, uint32_t probe) {
  static const std::map<std::string, double> fragility = {
      {"c.a", 2}, {"c.b", 30}, {"c.c", 5}, {"c.d", 22}, {"c.e", 11}, {"c.f", 40}, {"c.g", 3}, {"c.h", 16}};
  double total = 0;
  size_t start = 0;
  while (start < config.size()) {
    size_t end = config.find(',', start);
    if (end == std::string::npos) end = config.size();
    const std::string entry = config.substr(start, end - start);
    total += fragility.at(entry.substr(0, entry.find('=')));
    start = end + 1;
  }
  std::seed_seq seed(config.begin(), config.end());
  std::mt19937 rng(seed);
  rng.discard(probe * 4);
  std::normal_distribution<double> noise(0, 6);
  const double level = kCompletion - total + noise(rng);
  return static_cast<int>(std::clamp(std::lround(level), 0L, kCompletion));
}

// What the planner does: each config of a stage evaluated on the fewest first shards that hold the
// probes it needs (every probe when the driver names none), its metrics over those shards.
Evaluated RunStages(JobDriver& driver, int* stages) {
  Evaluated evaluated;
  *stages = 0;
  for (;;) {
    StatusOr<std::optional<std::vector<std::string>>> next = driver.NextStage(evaluated);
    EXPECT_TRUE(next.ok());
    if (!next.ok() || !*next) return evaluated;
    const std::map<std::string, uint32_t> probes = driver.StageProbes(evaluated);
    for (const std::string& config : **next) {
      auto it = probes.find(config);
      const uint32_t need = it == probes.end() ? kProbes : it->second;
      const uint32_t seen = std::min(kProbes, (need + kShard - 1) / kShard * kShard);
      std::vector<int> fdts;
      for (uint32_t p = 0; p < seen; ++p) fdts.push_back(SyntheticFdt(config, p));
      evaluated[config] = MetricsOf(fdts);
    }
    if (++*stages > 1000) {
      ADD_FAILURE() << "the race does not end";
      return evaluated;
    }
  }
}

const std::vector<std::string> kSearchComponents = {"c.a", "c.b", "c.c", "c.d", "c.e", "c.f", "c.g", "c.h"};

TEST(RacingSearchTest, FindsTheExactBeamsOnClearlySeparatedNodesForAFractionOfTheProbes) {
  QuantSearchDriver exact(kSearchComponents, "int8-absmax", 2, 3);
  QuantSearchDriver raced(kSearchComponents, "int8-absmax", 2, 3, RankMetric::kFdt75, Settings(kProbes, 16, 16));
  int exact_stages = 0;
  int raced_stages = 0;
  const Evaluated e = RunStages(exact, &exact_stages);
  const Evaluated r = RunStages(raced, &raced_stages);
  EXPECT_EQ(exact_stages, 3);
  EXPECT_GT(raced_stages, 3);
  // The same beams, level by level (the last level's on every probe, so with the same metrics).
  const std::vector<v1::ConfigResult> exact_rows = exact.Results(e);
  const std::vector<v1::ConfigResult> raced_rows = raced.Results(r);
  ASSERT_EQ(exact_rows.size(), raced_rows.size());
  for (size_t i = 0; i < exact_rows.size(); ++i) {
    EXPECT_EQ(raced_rows[i].config(), exact_rows[i].config());
    EXPECT_EQ(raced_rows[i].search_level(), exact_rows[i].search_level());
  }
  for (const v1::ConfigResult& row : raced_rows) {
    if (row.search_level() == 3) {
      EXPECT_TRUE(row.complete());
      EXPECT_EQ(row.metrics().fdt75(), e.at(row.config()).fdt75());
    }
  }
  // What it spent, counted two ways: the summary against the probes of every node it evaluated.
  const std::optional<v1::RacingSummary> summary = raced.Racing(r);
  ASSERT_TRUE(summary.has_value());
  uint64_t spent = 0;
  uint32_t dropped = 0;
  for (const v1::ConfigResult& row : raced.OtherNodes(r)) dropped += row.dropped_by_racing();
  for (const auto& [config, m] : r) spent += m.num_probes();
  EXPECT_EQ(summary->probe_evaluations(), spent);
  EXPECT_EQ(summary->exact_probe_evaluations(), e.size() * kProbes);  // the same levels' node counts
  EXPECT_EQ(summary->nodes_dropped(), dropped);
  EXPECT_GT(dropped, 10u);
  EXPECT_LT(summary->probe_evaluations(), summary->exact_probe_evaluations() / 2);
  // Dropped rows hold the metrics of their first probes, are incomplete, and rank after the others.
  for (const v1::ConfigResult& row : raced.OtherNodes(r)) {
    if (!row.dropped_by_racing()) continue;
    EXPECT_FALSE(row.complete());
    EXPECT_LT(row.metrics().num_probes(), kProbes);
    EXPECT_EQ(row.metrics().num_probes() % kShard, 0u);
  }
  // Per level: the drops and probe counts add up to the summary's.
  uint64_t level_spent = 0;
  uint32_t level_dropped = 0;
  for (const v1::SearchLevel& level : raced.SearchLevels(r, {})) {
    level_spent += level.probe_evaluations();
    level_dropped += level.nodes_dropped();
  }
  EXPECT_EQ(level_spent, spent);
  EXPECT_EQ(level_dropped, dropped);
}

TEST(RacingSearchTest, AnEpsilonEndsNearTiesSoonerAndKeepsTheWinners) {
  // c.a, c.g and c.c (fragility 2, 3, 5) are near-ties for level 1's two places: without an epsilon
  // the race runs them to many probes; with one it settles for a leader within 2 tokens.
  QuantSearchDriver exact(kSearchComponents, "int8-absmax", 2, 3);
  QuantSearchDriver strict(kSearchComponents, "int8-absmax", 2, 3, RankMetric::kFdt75,
                           Settings(kProbes, 16, 16));
  QuantSearchDriver loose(kSearchComponents, "int8-absmax", 2, 3, RankMetric::kFdt75,
                          WithEpsilon(Settings(kProbes, 16, 16), 2));
  int stages = 0;
  const Evaluated e = RunStages(exact, &stages);
  const Evaluated s = RunStages(strict, &stages);
  const Evaluated l = RunStages(loose, &stages);
  EXPECT_LT(loose.Racing(l)->probe_evaluations(), strict.Racing(s)->probe_evaluations());
  EXPECT_DOUBLE_EQ(loose.Racing(l)->epsilon(), 2);
  // Level 1's winner may be another near-tie, but none that the exact winner beats by epsilon or more
  // on every probe (c.a and c.g, fragility 2 and 3, are near-ties: the race keeps c.g); the last
  // level's beam holds exact metrics.
  auto full_fdt75 = [](const std::string& config) {
    std::vector<int> fdts;
    for (uint32_t p = 0; p < kProbes; ++p) fdts.push_back(SyntheticFdt(config, p));
    return MetricsOf(fdts).fdt75();
  };
  auto winner = [](const std::vector<v1::ConfigResult>& rows) {
    for (const v1::ConfigResult& row : rows) {
      if (row.search_level() == 1 && row.rank() == 0) return row.config();
    }
    return std::string();
  };
  const std::string exact_winner = winner(exact.Results(e));
  const std::string loose_winner = winner(loose.Results(l));
  ASSERT_FALSE(exact_winner.empty());
  ASSERT_FALSE(loose_winner.empty());
  EXPECT_LT(full_fdt75(exact_winner) - full_fdt75(loose_winner), 2);
  EXPECT_EQ(winner(strict.Results(s)), exact_winner);  // without an epsilon, the exact one
  const std::vector<v1::ConfigResult> loose_rows = loose.Results(l);
  for (const v1::ConfigResult& row : loose_rows) {
    if (row.search_level() != 3) continue;
    EXPECT_TRUE(row.complete());
    EXPECT_EQ(row.metrics().num_probes(), kProbes);
    EXPECT_EQ(row.metrics().fdt75(), full_fdt75(row.config())) << row.config();
  }
}

TEST(RacingSearchTest, ReplayingTheFinalMetricsGivesTheSameAnswerAndNothingMoreToDo) {
  QuantSearchDriver raced(kSearchComponents, "int8-absmax", 2, 3, RankMetric::kFdt75, Settings(kProbes, 32, 32));
  int stages = 0;
  const Evaluated r = RunStages(raced, &stages);
  // A restarted coordinator builds a fresh driver; fed the same metrics it is done, with the same rows.
  QuantSearchDriver again(kSearchComponents, "int8-absmax", 2, 3, RankMetric::kFdt75, Settings(kProbes, 32, 32));
  Evaluated copy = r;
  StatusOr<std::optional<std::vector<std::string>>> next = again.NextStage(copy);
  ASSERT_TRUE(next.ok());
  EXPECT_FALSE(next->has_value());
  const std::vector<v1::ConfigResult> a = raced.Results(r);
  const std::vector<v1::ConfigResult> b = again.Results(copy);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) EXPECT_EQ(a[i].SerializeAsString(), b[i].SerializeAsString());
  EXPECT_EQ(raced.Racing(r)->SerializeAsString(), again.Racing(copy)->SerializeAsString());
}

TEST(RacingProbeJobTest, DecidesTheKeptPlacesAndSaysWhatItSkipped) {
  StatusOr<JobSpec> spec = ParseJobSpec(
      "kind: probe\nmodel: m\nprobes: p.jsonl\ncompletion: 64\nprobe:\n  methods: [int8-absmax]\n"
      "  racing: {keep: 3, first: 16, step: 32, confidence: 0.9}\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->racing.keep, 3);
  EXPECT_EQ(spec->racing.step, 32);
  ModelGeometry geometry;
  geometry.num_layers = 2;
  StatusOr<std::unique_ptr<JobDriver>> driver = CreateJobDriver(*spec, geometry, {}, kProbes);
  ASSERT_TRUE(driver.ok());
  // Each config's FDTs sit around a level from its name's hash (libstdc++'s, fixed), +0..2 per probe.
  Evaluated evaluated;
  int stages = 0;
  for (;;) {
    StatusOr<std::optional<std::vector<std::string>>> next = (*driver)->NextStage(evaluated);
    ASSERT_TRUE(next.ok());
    if (!*next) break;
    const std::map<std::string, uint32_t> probes = (*driver)->StageProbes(evaluated);
    for (const std::string& config : **next) {
      const uint32_t need = probes.count(config) ? probes.at(config) : kProbes;
      const int level = static_cast<int>(std::hash<std::string>()(config) % 50);
      std::vector<int> fdts;
      for (uint32_t p = 0; p < std::min(kProbes, need); ++p) fdts.push_back(level + static_cast<int>(p % 3));
      evaluated[config] = MetricsOf(fdts);
    }
    ASSERT_LT(++stages, 100);
  }
  const std::vector<v1::ConfigResult> rows = (*driver)->Results(evaluated);
  EXPECT_EQ(rows.size(), 14u);  // 2 layers x 7 kinds, every one listed
  std::vector<v1::ConfigResult> kept;
  for (const v1::ConfigResult& row : rows) {
    if (row.dropped_by_racing()) {
      EXPECT_FALSE(row.complete());
    } else {
      kept.push_back(row);
    }
  }
  ASSERT_GE(kept.size(), 3u);
  for (const v1::ConfigResult& row : kept) EXPECT_EQ(row.metrics().num_probes(), kProbes);
  // The kept ones are the best three by fdt75 on every probe.
  std::vector<double> all;
  for (const v1::ConfigResult& row : rows) all.push_back(row.metrics().fdt75());
  std::sort(all.begin(), all.end(), std::greater<double>());
  for (const v1::ConfigResult& row : kept) EXPECT_GE(row.metrics().fdt75(), all[2]);
  const std::optional<v1::RacingSummary> summary = (*driver)->Racing(evaluated);
  ASSERT_TRUE(summary.has_value());
  EXPECT_EQ(summary->exact_probe_evaluations(), 14u * kProbes);
  EXPECT_EQ(summary->nodes_dropped(), rows.size() - kept.size());
  EXPECT_EQ(summary->first_probes(), 16u);
  EXPECT_DOUBLE_EQ(summary->confidence(), 0.9);
}

TEST(RacingSpecTest, ParsesAndRefusesWhatARaceCannotDo) {
  auto parse = [](const std::string& section) {
    return ParseJobSpec("kind: quant-search\nmodel: m\nprobes: p.jsonl\nquant-search:\n" + section);
  };
  StatusOr<JobSpec> ok = parse("  racing: {first: 50}\n");
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_TRUE(ok->racing.enabled);
  EXPECT_EQ(ok->racing.first, 50);
  EXPECT_EQ(ok->racing.step, 100);
  EXPECT_DOUBLE_EQ(ok->racing.confidence, 0.95);
  EXPECT_DOUBLE_EQ(ok->racing.epsilon, 0);
  EXPECT_DOUBLE_EQ(parse("  racing: {epsilon: 1.5}\n")->racing.epsilon, 1.5);
  EXPECT_FALSE(parse("  beam: 2\n")->racing.enabled);
  auto error = [&](const std::string& section) { return parse(section).status().ToString(); };
  EXPECT_THAT(error("  racing: {confidence: 1}\n"), ::testing::HasSubstr("quant-search.racing.confidence"));
  EXPECT_THAT(error("  racing: {confidence: 0.5}\n"), ::testing::HasSubstr("(0.5, 1)"));
  EXPECT_THAT(error("  racing: {first: 0}\n"), ::testing::HasSubstr("quant-search.racing.first"));
  EXPECT_THAT(error("  racing: {epsilon: -1}\n"), ::testing::HasSubstr("must be at least 0 (FDT tokens)"));
  EXPECT_THAT(error("  racing: {epsilon: .nan}\n"), ::testing::HasSubstr("quant-search.racing.epsilon"));
  EXPECT_THAT(error("  racing: {keep: 3}\n"), ::testing::HasSubstr("keep"));  // a search's places are its beam
  EXPECT_THAT(error("  racing: yes\n"), ::testing::HasSubstr("quant-search.racing"));
  EXPECT_THAT(error("  rank_by: dppl\n  racing: {}\n"), ::testing::HasSubstr("ranks by dppl"));
  StatusOr<JobSpec> no_keep =
      ParseJobSpec("kind: probe\nmodel: m\nprobes: p.jsonl\nprobe:\n  methods: [prune:0.5]\n  racing: {first: 10}\n");
  EXPECT_THAT(no_keep.status().ToString(), ::testing::HasSubstr("probe.racing.keep"));
  StatusOr<JobSpec> with_ppl = ParseJobSpec(
      "kind: quant-search\nmodel: m\nprobes: p.jsonl\nppl: {text: t.txt}\nquant-search:\n  racing: {}\n");
  EXPECT_THAT(with_ppl.status().ToString(), ::testing::HasSubstr("racing with ppl"));
}

}  // namespace
}  // namespace dtm
