#include "coordinator/aggregate.h"
#include "common/quantile.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "worker/engine/divergence.h"

namespace dtm {
namespace {

using ::testing::HasSubstr;

dtm::v1::ProbeResult Probe(uint32_t index, uint32_t fdt, uint32_t sdt, double nll) {
  dtm::v1::ProbeResult r;
  r.set_probe_id("p" + std::to_string(index));
  r.set_probe_index(index);
  r.set_fdt(fdt);
  r.set_sdt(sdt);
  r.set_nll(nll);
  return r;
}

std::vector<uint32_t> Histogram(const dtm::v1::Metrics& m) {
  return std::vector<uint32_t>(m.fdt_histogram().begin(), m.fdt_histogram().end());
}

void ExpectRelativelyEqual(double actual, double expected, const char* what) {
  EXPECT_LE(std::abs(actual - expected), 1e-12 * std::max(1.0, std::abs(expected)))
      << what << ": " << actual << " vs " << expected;
}

TEST(QuantileTest, InterpolatesLikeNumPy) {
  EXPECT_DOUBLE_EQ(Quantile({0, 1, 2, 3}, 0.75), 2.25);
  EXPECT_DOUBLE_EQ(Quantile({3, 0, 2, 1}, 0.75), 2.25);  // order does not matter
  EXPECT_DOUBLE_EQ(Quantile({10, 20, 30, 40, 50}, 0.75), 40.0);
  EXPECT_DOUBLE_EQ(Quantile({1, 2}, 0.5), 1.5);
  EXPECT_DOUBLE_EQ(Quantile({7}, 0.75), 7.0);
  EXPECT_DOUBLE_EQ(Quantile({5, 1, 9}, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(Quantile({5, 1, 9}, 1.0), 9.0);
  // numpy.quantile([0, 4, 5, 100, 3, 8], 0.75) == 7.25
  EXPECT_DOUBLE_EQ(Quantile({0, 4, 5, 100, 3, 8}, 0.75), 7.25);
  EXPECT_TRUE(std::isnan(Quantile({}, 0.75)));
}

TEST(AggregateTest, ComputesHandCheckedMetrics) {
  // completion length 4: FDTs 0..3, each with the largest SDT it admits, nlls 0, ln 2, ln 3, ln 4.
  std::vector<dtm::v1::ProbeResult> results = {Probe(2, 2, 2, std::log(3.0)), Probe(0, 0, 4, 0.0),
                                               Probe(3, 3, 1, std::log(4.0)), Probe(1, 1, 3, std::log(2.0))};
  StatusOr<dtm::v1::Metrics> m = AggregateProbeResults(results, 4);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_DOUBLE_EQ(m->fdt75(), 2.25);
  EXPECT_DOUBLE_EQ(m->fdt_mean(), 1.5);
  EXPECT_DOUBLE_EQ(m->sdt_mean(), 2.5);
  EXPECT_DOUBLE_EQ(m->dppl(), (1.0 + 2.0 + 3.0 + 4.0) / 4);
  EXPECT_DOUBLE_EQ(m->nll_mean(), std::log(24.0) / 4);
  EXPECT_EQ(Histogram(*m), (std::vector<uint32_t>{1, 1, 1, 1, 0}));
  EXPECT_EQ(m->num_probes(), 4u);
  EXPECT_FALSE(m->has_ppl());
  EXPECT_EQ(m->outlier_columns_mean(), 0.0);  // no llm-int8: no counts
}

// SPEC `ppl`: windows of one length score as many tokens each, so the mean over every scored token
// is the mean of the windows' NLLs.
TEST(AggregateTest, PerplexityOfWindowsIsExpOfTheMeanNllOverEveryScoredToken) {
  // window 5: 4 scored tokens each; NLL sums 4 ln 2, 4 ln 3, 4 ln 6 over 12 tokens.
  std::vector<dtm::v1::ProbeResult> windows = {Probe(1, 2, 1, std::log(3.0)), Probe(0, 4, 0, std::log(2.0)),
                                               Probe(2, 0, 4, std::log(6.0))};
  StatusOr<double> ppl = PerplexityOfWindows(windows, 5);
  ASSERT_TRUE(ppl.ok()) << ppl.status().ToString();
  const double token_mean = (4 * std::log(2.0) + 4 * std::log(3.0) + 4 * std::log(6.0)) / 12;
  ExpectRelativelyEqual(*ppl, std::exp(token_mean), "ppl");
  ExpectRelativelyEqual(*ppl, std::cbrt(36.0), "ppl");  // the geometric mean of 2, 3 and 6
  EXPECT_EQ(PerplexityOfWindows({}, 5).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(PerplexityOfWindows({Probe(0, 4, 0, 0.1), Probe(0, 4, 0, 0.1)}, 5).status().code(),
            StatusCode::kInvalidArgument);  // a window reported twice
}

// SPEC: fdt75 at the completion length ranks nothing; results say so (issue 13).
TEST(AggregateTest, SaturationWarningCountsTheConfigsWhoseFdt75IsTheCompletionLength) {
  // completion 4; a: 2 of 4 probes never diverge (fdt75 4, saturated); b: 1 of 4 (fdt75 3.25); c: all 4.
  StatusOr<dtm::v1::Metrics> a = AggregateProbeResults(
      {Probe(0, 4, 0, 0.1), Probe(1, 4, 0, 0.1), Probe(2, 1, 3, 0.2), Probe(3, 4 - 1, 1, 0.2)}, 4);
  StatusOr<dtm::v1::Metrics> b = AggregateProbeResults(
      {Probe(0, 4, 0, 0.1), Probe(1, 3, 1, 0.1), Probe(2, 1, 3, 0.2), Probe(3, 2, 2, 0.2)}, 4);
  StatusOr<dtm::v1::Metrics> c = AggregateProbeResults(
      {Probe(0, 4, 0, 0.1), Probe(1, 4, 0, 0.1), Probe(2, 4, 0, 0.2), Probe(3, 4, 0, 0.2)}, 4);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ASSERT_EQ(a->fdt75(), 4.0);
  ASSERT_EQ(b->fdt75(), 3.25);  // a quarter never diverging is not always saturated: the criterion is fdt75
  std::optional<std::string> warning = SaturationWarning({&*a, &*b, &*c}, 4);
  ASSERT_TRUE(warning.has_value());
  EXPECT_EQ(*warning,
            "fdt75 is saturated for 2 of 3 configs: 50 to 100 % of their probes never diverge, so fdt75 is the "
            "completion length (4) and cannot rank them; compare fdt_mean, or use a longer completion, more "
            "probes or a harsher method");
  EXPECT_FALSE(SaturationWarning({&*b}, 4).has_value());
  EXPECT_FALSE(SaturationWarning({}, 4).has_value());
}

TEST(AggregateTest, AveragesTheOutlierColumnsOverTheProbes) {
  std::vector<dtm::v1::ProbeResult> results = {Probe(1, 4, 0, 0.0), Probe(0, 4, 0, 0.0), Probe(2, 1, 2, 0.5)};
  results[0].set_outlier_columns(7);
  results[1].set_outlier_columns(0);
  results[2].set_outlier_columns(12);
  StatusOr<dtm::v1::Metrics> m = AggregateProbeResults(results, 4);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_DOUBLE_EQ(m->outlier_columns_mean(), (7 + 0 + 12) / 3.0);
}

TEST(AggregateTest, CountsProbesThatNeverDivergeInTheLastBin) {
  std::vector<dtm::v1::ProbeResult> results = {Probe(0, 10, 0, 0.1), Probe(1, 10, 0, 0.3),
                                               Probe(2, 10, 0, 0.2), Probe(3, 4, 2, 0.9)};
  StatusOr<dtm::v1::Metrics> m = AggregateProbeResults(results, 10);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_DOUBLE_EQ(m->fdt75(), 10.0);
  EXPECT_DOUBLE_EQ(m->fdt_mean(), 8.5);
  EXPECT_DOUBLE_EQ(m->sdt_mean(), 0.5);
  EXPECT_DOUBLE_EQ(m->dppl(), (std::exp(0.1) + std::exp(0.3) + std::exp(0.2) + std::exp(0.9)) / 4);
  EXPECT_EQ(Histogram(*m), (std::vector<uint32_t>{0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 3}));
}

TEST(AggregateTest, NoResultsGiveZeroProbesAndAnEmptyHistogram) {
  StatusOr<dtm::v1::Metrics> m = AggregateProbeResults({}, 3);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->num_probes(), 0u);
  EXPECT_EQ(Histogram(*m), (std::vector<uint32_t>{0, 0, 0, 0}));
  EXPECT_EQ(m->fdt75(), 0.0);
  EXPECT_EQ(m->dppl(), 0.0);
}

// The engine's Summarize is an independent implementation of the same definitions; the coordinator's
// must agree with it whatever order the shards arrive in.
TEST(AggregateTest, MatchesTheEngineOnRandomProbesInRandomShardOrder) {
  constexpr int64_t kCompletion = 64;
  constexpr int kProbes = 200;
  std::mt19937_64 rng(20240611);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<ProbeDivergence> engine(kProbes);
    std::vector<dtm::v1::ProbeResult> probes;
    uint64_t outlier_total = 0;  // an integer sum: exact, whatever the order
    for (int i = 0; i < kProbes; ++i) {
      // A quarter never diverge; the rest diverge somewhere with a consistent SDT.
      ProbeDivergence& d = engine[i];
      d.fdt = rng() % 4 == 0 ? kCompletion : static_cast<int64_t>(rng() % kCompletion);
      d.sdt = d.fdt == kCompletion ? 0 : 1 + static_cast<int64_t>(rng() % (kCompletion - d.fdt));
      d.nll = std::uniform_real_distribution<double>(0.0, 6.0)(rng);
      probes.push_back(Probe(i, static_cast<uint32_t>(d.fdt), static_cast<uint32_t>(d.sdt), d.nll));
      const uint32_t outliers = static_cast<uint32_t>(rng() % 300);
      probes.back().set_outlier_columns(outliers);
      outlier_total += outliers;
    }
    // Random shard boundaries, shards in random order, rows inside a shard shuffled too.
    std::vector<std::vector<dtm::v1::ProbeResult>> shards;
    for (int begin = 0; begin < kProbes;) {
      int end = std::min(kProbes, begin + 1 + static_cast<int>(rng() % 37));
      shards.emplace_back(probes.begin() + begin, probes.begin() + end);
      std::shuffle(shards.back().begin(), shards.back().end(), rng);
      begin = end;
    }
    std::shuffle(shards.begin(), shards.end(), rng);
    std::vector<dtm::v1::ProbeResult> arrived;
    for (const auto& shard : shards) arrived.insert(arrived.end(), shard.begin(), shard.end());

    StatusOr<dtm::v1::Metrics> m = AggregateProbeResults(arrived, kCompletion);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    DivergenceSummary want = Summarize(engine, kCompletion);
    ExpectRelativelyEqual(m->fdt75(), want.fdt75, "fdt75");
    ExpectRelativelyEqual(m->fdt_mean(), want.fdt_mean, "fdt_mean");
    ExpectRelativelyEqual(m->sdt_mean(), want.sdt_mean, "sdt_mean");
    ExpectRelativelyEqual(m->dppl(), want.dppl, "dppl");
    ExpectRelativelyEqual(m->nll_mean(), want.nll_mean, "nll_mean");
    ExpectRelativelyEqual(m->outlier_columns_mean(), static_cast<double>(outlier_total) / kProbes, "outlier_columns_mean");
    EXPECT_EQ(m->num_probes(), static_cast<uint32_t>(kProbes));
    ASSERT_EQ(m->fdt_histogram_size(), kCompletion + 1);
    for (int64_t k = 0; k <= kCompletion; ++k) {
      EXPECT_EQ(static_cast<int64_t>(m->fdt_histogram(static_cast<int>(k))), want.fdt_histogram[k])
          << "bin " << k;
    }

    // Bit-for-bit the same whichever order the same rows arrive in: the sums run in probe order.
    std::shuffle(arrived.begin(), arrived.end(), rng);
    StatusOr<dtm::v1::Metrics> again = AggregateProbeResults(arrived, kCompletion);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again->SerializeAsString(), m->SerializeAsString());
  }
}

void ExpectInvalid(const std::vector<dtm::v1::ProbeResult>& results, int64_t completion_len,
                   const std::vector<std::string>& parts) {
  StatusOr<dtm::v1::Metrics> m = AggregateProbeResults(results, completion_len);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  for (const std::string& part : parts) EXPECT_THAT(m.status().message(), HasSubstr(part));
}

TEST(AggregateTest, RejectsAProbeReportedTwice) {
  ExpectInvalid({Probe(0, 1, 1, 0.1), Probe(5, 1, 1, 0.1), Probe(5, 2, 1, 0.2)}, 4,
                {"probe 5", "reported twice"});
}

TEST(AggregateTest, RejectsCountsBeyondTheCompletionLength) {
  ExpectInvalid({Probe(0, 1, 1, 0.1), Probe(1, 5, 0, 0.1)}, 4,
                {"probe 1 ('p1')", "fdt 5 exceeds the completion length 4"});
  ExpectInvalid({Probe(3, 0, 5, 0.1)}, 4, {"probe 3", "sdt 5 exceeds the completion length 4"});
}

TEST(AggregateTest, RejectsContradictoryFdtAndSdt) {
  ExpectInvalid({Probe(0, 4, 1, 0.1)}, 4, {"probe 0", "sdt 1 with no divergence"});
  ExpectInvalid({Probe(0, 2, 0, 0.1)}, 4, {"probe 0", "sdt 0 is not in [1, 2] for fdt 2"});
  ExpectInvalid({Probe(0, 2, 3, 0.1)}, 4, {"probe 0", "sdt 3 is not in [1, 2] for fdt 2"});
}

TEST(AggregateTest, RejectsANonFiniteNll) {
  ExpectInvalid({Probe(7, 1, 1, std::numeric_limits<double>::quiet_NaN())}, 4,
                {"probe 7", "nll", "not finite"});
  ExpectInvalid({Probe(8, 1, 1, std::numeric_limits<double>::infinity())}, 4, {"probe 8", "not finite"});
}

TEST(AggregateTest, RejectsACompletionLengthBelowOne) { ExpectInvalid({}, 0, {"completion length 0"}); }

}  // namespace
}  // namespace dtm
