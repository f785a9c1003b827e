#include "coordinator/sparsity_allocation.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace dtm {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

constexpr double kLen = 100;  // completion length of every hand-made case

ComponentCurve Comp(std::string name, double params, double current,
                    std::vector<std::pair<double, double>> probes = {}) {
  return ComponentCurve{std::move(name), params, current, std::move(probes)};
}

AllocationOptions Options(double step, double completion_len = kLen) { return {step, completion_len}; }

double Average(const std::vector<ComponentCurve>& cs, const std::vector<double>& s) {
  double num = 0, den = 0;
  for (size_t i = 0; i < cs.size(); ++i) {
    num += cs[i].params * s[i];
    den += cs[i].params;
  }
  return num / den;
}

double Room(const std::vector<ComponentCurve>& cs) {
  std::vector<double> rooms;
  for (const auto& c : cs) rooms.push_back(1 - c.current_sparsity);
  return Average(cs, rooms);
}

// Random components with probes anywhere in their room. With `plateaus`, FDT75 values are rounded to
// multiples of 10 so that many curves have flat pieces at shared levels (the solver's hard case).
std::vector<ComponentCurve> RandomComponents(std::mt19937& rng, size_t n, double len, bool plateaus) {
  std::uniform_real_distribution<double> unit(0, 1);
  std::vector<ComponentCurve> cs;
  for (size_t i = 0; i < n; ++i) {
    ComponentCurve c = Comp("c" + std::to_string(i), 1 + 1000 * unit(rng), 0.9 * unit(rng));
    const double room = 1 - c.current_sparsity;
    const int probes = static_cast<int>(unit(rng) * 5);
    for (int p = 0; p < probes; ++p) {
      double fdt = len * unit(rng);
      if (plateaus) fdt = std::round(fdt / 10) * 10;
      c.probes.emplace_back(std::max(1e-6, room * unit(rng)), fdt);
    }
    cs.push_back(std::move(c));
  }
  return cs;
}

void ExpectNear(const std::vector<double>& actual, const std::vector<double>& expected, double tol) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i) EXPECT_NEAR(actual[i], expected[i], tol) << "component " << i;
}

// ---- the curve

TEST(FdtCurveTest, InterpolatesLinearlyBetweenTheFixedEndsAndTheProbes) {
  const ComponentCurve c = Comp("a", 1, 0, {{0.2, 40}, {0.1, 80}});  // unsorted on purpose
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0, kLen), 100);
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.05, kLen), 90);
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.1, kLen), 80);
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.15, kLen), 60);
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.6, kLen), 20);  // halfway from (0.2, 40) to (1, 0)
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 1, kLen), 0);
  // Outside the room the curve is flat at its ends.
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, -0.1, kLen), 100);
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 1.5, kLen), 0);
}

TEST(FdtCurveTest, EndsAtWhatIsLeftOfAPartlyPrunedComponent) {
  // Already 60% pruned: "100%" is an extra 0.4, so the line runs from (0, 100) to (0.4, 0).
  const ComponentCurve c = Comp("a", 1, 0.6);
  EXPECT_THAT(FdtCurvePoints(c, kLen), ElementsAre(Pair(0.0, 100.0), Pair(0.4, 0.0)));
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.1, kLen), 75);
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.4, kLen), 0);
}

TEST(FdtCurveTest, IsMadeNonIncreasingAndMergesProbesAtTheSameSparsity) {
  // (0.2, 70) lies above (0.1, 50): the running minimum lowers it to 50. The two probes at 0.3 merge into
  // the smaller one. A probe at the room (0.5) meets the fixed end point (0.5, 0) and merges into it.
  const ComponentCurve c = Comp("a", 1, 0.5, {{0.1, 50}, {0.2, 70}, {0.3, 40}, {0.3, 30}, {0.5, 20}});
  EXPECT_THAT(FdtCurvePoints(c, kLen), ElementsAre(Pair(0.0, 100.0), Pair(0.1, 50.0), Pair(0.2, 50.0),
                                                   Pair(0.3, 30.0), Pair(0.5, 0.0)));
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.15, kLen), 50);
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.25, kLen), 40);
  EXPECT_DOUBLE_EQ(InterpolateFdt(c, 0.4, kLen), 15);
}

// ---- known optima, computed by hand

TEST(BalancedSparsityTest, EqualComponentsSplitTheStepEvenly) {
  // Identical curves: by symmetry s_1 = s_2, and the constraint gives s = step = 0.1, where the curve
  // (0,100) (0.05,80) (0.1,60) (0.15,40) reads 60.
  const std::vector<std::pair<double, double>> probes = {{0.05, 80}, {0.1, 60}, {0.15, 40}};
  const std::vector<ComponentCurve> cs = {Comp("a", 5, 0.2, probes), Comp("b", 5, 0.2, probes)};
  const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(0.1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectNear(r->extra, {0.1, 0.1}, 1e-12);
  ExpectNear(r->predicted_fdt75, {60, 60}, 1e-9);
  EXPECT_NEAR(r->min_fdt75, 60, 1e-9);
  EXPECT_NEAR(r->achieved_step, 0.1, 1e-12);
}

TEST(BalancedSparsityTest, TwoLinearCurvesMeetAtTheClosedFormLevel) {
  // a: 3 params, unpruned, FDT = 100 (1 - s). b: 1 param, half pruned, FDT = 100 (1 - 2 s).
  // Equal FDT: s_a = 2 s_b. Constraint (3 s_a + s_b) / 4 = 0.14 -> 7 s_b = 0.56 -> s_b = 0.08,
  // s_a = 0.16, t* = 84.
  const std::vector<ComponentCurve> cs = {Comp("a", 3, 0), Comp("b", 1, 0.5)};
  const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(0.14));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectNear(r->extra, {0.16, 0.08}, 1e-12);
  EXPECT_NEAR(r->min_fdt75, 84, 1e-9);
  ExpectNear(r->predicted_fdt75, {84, 84}, 1e-9);
}

TEST(BalancedSparsityTest, APlateauAtTheTopAbsorbsTheStepForFree) {
  // a: FDT stays 100 up to s = 0.2 (probes), then falls linearly to 0 at 1.
  // b: 100 -> 50 at s = 0.1, then to 0 at 1. Equal params, so s_a + s_b = 2 step.
  const std::vector<ComponentCurve> cs = {Comp("a", 1, 0, {{0.1, 100}, {0.2, 100}}),
                                          Comp("b", 1, 0, {{0.1, 50}})};
  // step 0.05: a alone takes 0.1 on its plateau, b nothing; nothing loses FDT.
  StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(0.05));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectNear(r->extra, {0.1, 0}, 1e-12);
  EXPECT_NEAR(r->min_fdt75, 100, 1e-9);
  // step 0.1: the whole plateau, exactly.
  r = AllocateBalancedSparsity(cs, Options(0.1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectNear(r->extra, {0.2, 0}, 1e-12);
  EXPECT_NEAR(r->min_fdt75, 100, 1e-9);
  // step 0.15: with u = 100 - t, s_a = 0.2 + 0.8 u / 100 and s_b = 0.1 u / 50; their sum 0.3 gives
  // 0.01 u = 0.1, u = 10: t* = 90, s_a = 0.28, s_b = 0.02.
  r = AllocateBalancedSparsity(cs, Options(0.15));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectNear(r->extra, {0.28, 0.02}, 1e-12);
  EXPECT_NEAR(r->min_fdt75, 90, 1e-9);
}

TEST(BalancedSparsityTest, APlateauAtTheOptimumIsFilledByTheSameFraction) {
  // a: 100 -> 60 at 0.1, flat at 60 up to 0.3, then to 0 at 1. b: 100 (1 - s). Equal params, step 0.3:
  // s_a + s_b = 0.6. No level above 60 is reachable: there s_a < 0.1 and s_b < 0.4. At 60, b takes 0.4
  // and a anything in [0.1, 0.3]: the remaining 0.2 puts a halfway along its plateau, s_a = 0.2.
  const std::vector<ComponentCurve> cs = {Comp("a", 1, 0, {{0.1, 60}, {0.3, 60}}), Comp("b", 1, 0)};
  const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(0.3));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectNear(r->extra, {0.2, 0.4}, 1e-12);
  EXPECT_NEAR(r->min_fdt75, 60, 1e-9);
  EXPECT_NEAR(r->achieved_step, 0.3, 1e-12);
}

TEST(BalancedSparsityTest, ANearlyFullyPrunedComponentIsCappedByItsRoom) {
  // a: 90% pruned, so 0.1 left; its probe says it keeps FDT 100 up to 0.099, then it falls to 0 at 0.1.
  // b: 100 (1 - s). Equal params, step 0.1: s_a + s_b = 0.2. With u = (100 - t) / 100:
  // s_a = 0.099 + 0.001 u, s_b = u, so 1.001 u = 0.101. a would take far more if it had room.
  const std::vector<ComponentCurve> cs = {Comp("a", 1, 0.9, {{0.099, 100}}), Comp("b", 1, 0)};
  const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(0.1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const double u = 0.101 / 1.001;
  ExpectNear(r->extra, {0.099 + 0.001 * u, u}, 1e-12);
  EXPECT_LT(r->extra[0], 0.1);
  EXPECT_NEAR(r->min_fdt75, 100 * (1 - u), 1e-9);
}

TEST(BalancedSparsityTest, AStepOfEverythingLeftPrunesEverything) {
  // Room left: (0.1 * 1 + 0.5 * 3) / 4 = 0.4; asking for all of it leaves one choice, FDT 0.
  const std::vector<ComponentCurve> cs = {Comp("a", 1, 0.9, {{0.05, 100}}), Comp("b", 3, 0.5)};
  const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(0.4));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectNear(r->extra, {0.1, 0.5}, 1e-12);
  EXPECT_NEAR(r->min_fdt75, 0, 1e-9);
}

// ---- properties on random cases

TEST(BalancedSparsityTest, MeetsTheStepExactlyAndBalancesEveryComponentOnRandomCases) {
  for (unsigned seed = 1; seed <= 40; ++seed) {
    std::mt19937 rng(seed);
    const size_t n = 20 + 15 * seed;
    const std::vector<ComponentCurve> cs = RandomComponents(rng, n, 500, seed % 2 == 0);
    const double step = std::uniform_real_distribution<double>(0.001, 1)(rng) * Room(cs);
    const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(step, 500));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ASSERT_EQ(r->extra.size(), n);
    EXPECT_NEAR(Average(cs, r->extra), step, 1e-9) << "seed " << seed;
    EXPECT_NEAR(r->achieved_step, step, 1e-9) << "seed " << seed;
    for (size_t i = 0; i < n; ++i) {
      EXPECT_GE(r->extra[i], 0) << "seed " << seed << " component " << i;
      EXPECT_LE(r->extra[i], 1 - cs[i].current_sparsity) << "seed " << seed << " component " << i;
      EXPECT_EQ(r->predicted_fdt75[i], InterpolateFdt(cs[i], r->extra[i], 500));
      // Continuous curves let every component sit at the optimal level itself.
      EXPECT_NEAR(r->predicted_fdt75[i], r->min_fdt75, 1e-7) << "seed " << seed << " component " << i;
    }
    EXPECT_EQ(r->min_fdt75, *std::min_element(r->predicted_fdt75.begin(), r->predicted_fdt75.end()));
  }
}

// Largest s with FDT(s) >= t, by bisection on InterpolateFdt alone (independent of the solver's inverse).
double ReferenceReach(const ComponentCurve& c, double t, double len) {
  double lo = 0, hi = 1 - c.current_sparsity;
  if (InterpolateFdt(c, hi, len) >= t) return hi;
  for (int i = 0; i < 200; ++i) {
    const double mid = (lo + hi) / 2;
    (InterpolateFdt(c, mid, len) >= t ? lo : hi) = mid;
  }
  return lo;
}

TEST(BalancedSparsityTest, ReachesTheLevelOfAnIndependentBisection) {
  for (unsigned seed = 100; seed < 120; ++seed) {
    std::mt19937 rng(seed);
    const std::vector<ComponentCurve> cs = RandomComponents(rng, 12, kLen, seed % 2 == 1);
    const double step = std::uniform_real_distribution<double>(0.01, 0.99)(rng) * Room(cs);
    // The best level: the largest t at which the components can still take step between them.
    auto can_take = [&](double t) {
      std::vector<double> s;
      for (const auto& c : cs) s.push_back(ReferenceReach(c, t, kLen));
      return Average(cs, s) >= step;
    };
    double lo = 0, hi = kLen;
    if (can_take(kLen)) lo = kLen;
    for (int i = 0; i < 100 && lo < hi; ++i) {
      const double mid = (lo + hi) / 2;
      (can_take(mid) ? lo : hi) = mid;
    }
    const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(step));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_NEAR(r->min_fdt75, lo, 1e-6) << "seed " << seed;
  }
}

TEST(BalancedSparsityTest, NoAllocationOnAFineGridHasAHigherMinimum) {
  for (unsigned seed = 200; seed < 212; ++seed) {
    std::mt19937 rng(seed);
    const size_t n = seed % 2 == 0 ? 2 : 3;
    const std::vector<ComponentCurve> cs = RandomComponents(rng, n, kLen, seed % 4 < 2);
    const double step = std::uniform_real_distribution<double>(0.05, 0.95)(rng) * Room(cs);
    const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(step));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    double total = 0;
    for (const auto& c : cs) total += c.params;
    // The last component takes whatever the others leave of the step; the rest run over a grid.
    const int grid = n == 2 ? 20000 : 300;
    const double room0 = 1 - cs[0].current_sparsity, room1 = 1 - cs[1].current_sparsity;
    const double room_last = 1 - cs[n - 1].current_sparsity;
    double best = -1;
    for (int i = 0; i <= grid; ++i) {
      for (int j = 0; j <= (n == 2 ? 0 : grid); ++j) {
        std::vector<double> s = {room0 * i / grid};
        if (n == 3) s.push_back(room1 * j / grid);
        double taken = 0;
        for (size_t k = 0; k < s.size(); ++k) taken += cs[k].params * s[k];
        const double last = (step * total - taken) / cs[n - 1].params;
        if (last < 0 || last > room_last) continue;
        s.push_back(last);
        double worst = kLen;
        for (size_t k = 0; k < n; ++k) worst = std::min(worst, InterpolateFdt(cs[k], s[k], kLen));
        best = std::max(best, worst);
      }
    }
    ASSERT_GE(best, 0) << "seed " << seed << ": no feasible grid point";
    EXPECT_LE(best, r->min_fdt75 + 1e-9) << "seed " << seed;
  }
}

TEST(BalancedSparsityTest, ALargerStepNeverRaisesTheMinimumNorLowersAnIncrease) {
  for (unsigned seed = 300; seed < 310; ++seed) {
    std::mt19937 rng(seed);
    const std::vector<ComponentCurve> cs = RandomComponents(rng, 25, kLen, seed % 2 == 0);
    const double room = Room(cs);
    Allocation previous;
    for (int k = 1; k <= 60; ++k) {
      const double step = std::min(room, room * k / 60);
      const StatusOr<Allocation> r = AllocateBalancedSparsity(cs, Options(step));
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      if (k > 1) {
        EXPECT_LE(r->min_fdt75, previous.min_fdt75 + 1e-9) << "seed " << seed << " step " << step;
        for (size_t i = 0; i < cs.size(); ++i)
          EXPECT_GE(r->extra[i], previous.extra[i] - 1e-12) << "seed " << seed << " component " << i;
      }
      previous = *r;
    }
  }
}

TEST(BalancedSparsityTest, IsDeterministicAndIndependentOfComponentOrder) {
  std::mt19937 rng(7);
  std::vector<ComponentCurve> cs = RandomComponents(rng, 40, kLen, true);
  const StatusOr<Allocation> a = AllocateBalancedSparsity(cs, Options(0.2));
  const StatusOr<Allocation> b = AllocateBalancedSparsity(cs, Options(0.2));
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->extra, b->extra);
  std::reverse(cs.begin(), cs.end());
  const StatusOr<Allocation> c = AllocateBalancedSparsity(cs, Options(0.2));
  ASSERT_TRUE(c.ok());
  std::vector<double> reversed(c->extra.rbegin(), c->extra.rend());
  ExpectNear(reversed, a->extra, 1e-12);
}

TEST(BalancedSparsityTest, IsNeverWorseThanUniform) {
  for (unsigned seed = 400; seed < 420; ++seed) {
    std::mt19937 rng(seed);
    std::vector<ComponentCurve> cs = RandomComponents(rng, 30, kLen, seed % 2 == 0);
    for (auto& c : cs) c.current_sparsity = std::min(c.current_sparsity, 0.5);
    for (auto& c : cs)
      for (auto& p : c.probes) p.first = std::min(p.first, 1 - c.current_sparsity);
    const StatusOr<Allocation> balanced = AllocateBalancedSparsity(cs, Options(0.3));
    const StatusOr<Allocation> uniform = AllocateUniform(cs, Options(0.3));
    ASSERT_TRUE(balanced.ok() && uniform.ok());
    EXPECT_GE(balanced->min_fdt75, uniform->min_fdt75 - 1e-9) << "seed " << seed;
  }
}

// ---- uniform baseline

TEST(UniformSparsityTest, GivesEveryComponentTheStep) {
  const std::vector<ComponentCurve> cs = {Comp("a", 3, 0, {{0.1, 80}}), Comp("b", 1, 0.5)};
  const StatusOr<Allocation> r = AllocateUniform(cs, Options(0.1));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ExpectNear(r->extra, {0.1, 0.1}, 0);
  // a reads its probe, b its line 100 (1 - 2 s).
  ExpectNear(r->predicted_fdt75, {80, 80}, 1e-9);
  EXPECT_NEAR(r->min_fdt75, 80, 1e-9);
  EXPECT_NEAR(r->achieved_step, 0.1, 1e-15);
}

TEST(UniformSparsityTest, RejectsAComponentWithLessThanTheStepLeft) {
  const std::vector<ComponentCurve> cs = {Comp("a", 1, 0), Comp("attn.7", 1, 0.95)};
  const StatusOr<Allocation> r = AllocateUniform(cs, Options(0.1));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr("component 1 ('attn.7')"));
  EXPECT_THAT(r.status().message(), HasSubstr("less than step 0.1"));
  // The balanced allocation has room for it: the average left is 0.525.
  EXPECT_TRUE(AllocateBalancedSparsity(cs, Options(0.1)).ok());
}

// ---- bad inputs

struct BadCase {
  const char* what;
  std::vector<ComponentCurve> components;
  AllocationOptions options;
  const char* message;
};

TEST(SparsityAllocationInputTest, RejectsBadInputsNamingTheField) {
  const ComponentCurve ok = Comp("ok", 1, 0.5, {{0.1, 50}});
  const std::vector<BadCase> cases = {
      {"no components", {}, Options(0.1), "no components"},
      {"step 0", {ok}, Options(0), "step 0 must be in (0, 1)"},
      {"step negative", {ok}, Options(-0.1), "step -0.1"},
      {"step 1", {ok}, Options(1), "step 1 must be in (0, 1)"},
      {"step nan", {ok}, Options(std::nan("")), "must be in (0, 1)"},
      {"completion_len", {ok}, Options(0.1, 0), "completion_len 0 must be positive"},
      // Room left: (0.5 * 1 + 0.25 * 3) / 4.
      {"step beyond room", {ok, Comp("b", 3, 0.75)}, Options(0.4),
       "exceeds what is left to prune: at most 0.3125"},
      {"params 0", {ok, Comp("b", 0, 0)}, Options(0.1), "component 1 ('b'): params 0 must be positive"},
      {"params negative", {Comp("b", -2, 0)}, Options(0.1), "component 0 ('b'): params -2"},
      {"sparsity 1", {Comp("b", 1, 1)}, Options(0.1), "component 0 ('b'): current_sparsity 1 is not in [0, 1)"},
      {"sparsity negative", {Comp("b", 1, -0.1)}, Options(0.1), "current_sparsity -0.1"},
      {"probe at 0", {Comp("b", 1, 0.5, {{0, 50}})}, Options(0.1),
       "component 0 ('b'): probe extra sparsity 0 is not in (0, 0.5]"},
      {"probe beyond room", {Comp("b", 1, 0.5, {{0.6, 50}})}, Options(0.1), "probe extra sparsity 0.6"},
      {"probe fdt above", {Comp("b", 1, 0, {{0.1, 101}})}, Options(0.1), "probe FDT75 101"},
      {"probe fdt negative", {Comp("b", 1, 0, {{0.1, -1}})}, Options(0.1), "probe FDT75 -1"},
      {"duplicate", {ok, Comp("b", 1, 0), Comp("ok", 2, 0)}, Options(0.1), "component 2 ('ok'): name repeats"},
      {"empty name", {Comp("", 1, 0)}, Options(0.1), "name is empty"},
  };
  for (const BadCase& c : cases) {
    for (bool uniform : {false, true}) {
      if (uniform && std::string(c.what) == "step beyond room") continue;  // uniform names the component
      const StatusOr<Allocation> r = uniform ? AllocateUniform(c.components, c.options)
                                             : AllocateBalancedSparsity(c.components, c.options);
      ASSERT_FALSE(r.ok()) << c.what;
      EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << c.what;
      EXPECT_THAT(r.status().message(), HasSubstr(c.message)) << c.what;
    }
  }
}

TEST(SparsityAllocationInputTest, AcceptsAProbeAtTheWholeRoom) {
  // 3 step / 2 may reach exactly what is left; that probe is valid.
  const std::vector<ComponentCurve> cs = {Comp("a", 1, 0.85, {{0.15, 10}}), Comp("b", 1, 0)};
  EXPECT_TRUE(AllocateBalancedSparsity(cs, Options(0.1)).ok());
}

}  // namespace
}  // namespace dtm
