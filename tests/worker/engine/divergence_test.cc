#include "worker/engine/divergence.h"
#include "common/quantile.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

namespace dtm {
namespace {

// Logits [1, M, V] whose argmax at position i is argmax[i], with a margin of 1.
torch::Tensor PeakedLogits(const std::vector<int64_t>& argmax, int64_t vocab) {
  torch::Tensor logits = torch::zeros({1, static_cast<int64_t>(argmax.size()), vocab});
  for (size_t i = 0; i < argmax.size(); ++i) logits[0][i][argmax[i]] = 1.0;
  return logits;
}

torch::Tensor Targets(const std::vector<int64_t>& t) { return torch::tensor(t).unsqueeze(0); }

// nll of a target under logits that are 1 at one id and 0 elsewhere: log(e + V - 1) - [hit].
double PeakedNll(bool hit, int64_t vocab) { return std::log(std::exp(1.0) + static_cast<double>(vocab - 1)) - (hit ? 1.0 : 0.0); }

TEST(DivergenceTest, NoDivergenceGivesTheCompletionLength) {
  std::vector<ProbeDivergence> d = DivergenceFromLogits(PeakedLogits({3, 1, 4, 1, 5}, 8), Targets({3, 1, 4, 1, 5}));
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].fdt, 5);
  EXPECT_EQ(d[0].sdt, 0);
  EXPECT_NEAR(d[0].nll, PeakedNll(true, 8), 1e-6);
}

TEST(DivergenceTest, CountsFromTheFirstCompletionToken) {
  std::vector<ProbeDivergence> first = DivergenceFromLogits(PeakedLogits({0, 1, 2, 3}, 8), Targets({7, 1, 2, 3}));
  EXPECT_EQ(first[0].fdt, 0);
  EXPECT_EQ(first[0].sdt, 1);
  std::vector<ProbeDivergence> last = DivergenceFromLogits(PeakedLogits({0, 1, 2, 3}, 8), Targets({0, 1, 2, 7}));
  EXPECT_EQ(last[0].fdt, 3);
  EXPECT_EQ(last[0].sdt, 1);
  std::vector<ProbeDivergence> several = DivergenceFromLogits(PeakedLogits({0, 1, 2, 3, 4}, 8), Targets({0, 7, 2, 7, 7}));
  EXPECT_EQ(several[0].fdt, 1);
  EXPECT_EQ(several[0].sdt, 3);
  // Three of five targets miss the peak.
  EXPECT_NEAR(several[0].nll, (2 * PeakedNll(true, 8) + 3 * PeakedNll(false, 8)) / 5, 1e-6);
}

TEST(DivergenceTest, UniformLogitsGiveLogVocabNll) {
  std::vector<ProbeDivergence> d = DivergenceFromLogits(torch::zeros({2, 6, 50}), torch::zeros({2, 6}, torch::kInt64));
  for (const ProbeDivergence& p : d) EXPECT_NEAR(p.nll, std::log(50.0), 1e-6);
  // argmax of equal logits is the lowest id (0), which the targets are: no divergence.
  EXPECT_EQ(d[0].fdt, 6);
}

TEST(DivergenceTest, MatchesAPerPositionLoopOnRandomLogits) {
  torch::manual_seed(3);
  const int64_t b = 4, m = 30, v = 11;
  torch::Tensor logits = torch::randn({b, m, v});
  torch::Tensor argmax = logits.argmax(-1);
  // Targets agree with the argmax except at random places.
  torch::Tensor targets = torch::where(torch::rand({b, m}).lt(0.1), torch::randint(v, {b, m}), argmax);
  std::vector<ProbeDivergence> d = DivergenceFromLogits(logits, targets);
  for (int64_t i = 0; i < b; ++i) {
    int64_t fdt = m, sdt = 0;
    double nll = 0;
    for (int64_t j = 0; j < m; ++j) {
      // Independent: find the max by a scan, log-sum-exp in double.
      int64_t best = 0;
      double lse_max = -1e30;
      for (int64_t k = 0; k < v; ++k) {
        double x = logits[i][j][k].item<double>();
        if (x > logits[i][j][best].item<double>()) best = k;
        lse_max = std::max(lse_max, x);
      }
      double sum = 0;
      for (int64_t k = 0; k < v; ++k) sum += std::exp(logits[i][j][k].item<double>() - lse_max);
      int64_t target = targets[i][j].item<int64_t>();
      nll += -(logits[i][j][target].item<double>() - lse_max - std::log(sum));
      if (best != target) {
        ++sdt;
        if (fdt == m) fdt = j;
      }
    }
    EXPECT_EQ(d[i].fdt, fdt) << "probe " << i;
    EXPECT_EQ(d[i].sdt, sdt) << "probe " << i;
    EXPECT_NEAR(d[i].nll, nll / m, 1e-5) << "probe " << i;
  }
}

TEST(DivergenceTest, QuantileMatchesNumpyLinearInterpolation) {
  // numpy.quantile([1, 2, 3, 4], 0.75) == 3.25; ([10, 0, 5], 0.75) == 7.5; single value.
  EXPECT_DOUBLE_EQ(Quantile({1, 2, 3, 4}, 0.75), 3.25);
  EXPECT_DOUBLE_EQ(Quantile({10, 0, 5}, 0.75), 7.5);
  EXPECT_DOUBLE_EQ(Quantile({42}, 0.75), 42);
  EXPECT_DOUBLE_EQ(Quantile({1, 2, 3, 4, 5}, 0.0), 1);
  EXPECT_DOUBLE_EQ(Quantile({1, 2, 3, 4, 5}, 1.0), 5);
  // numpy.quantile(range(1000), 0.75) == 749.25
  std::vector<double> many;
  for (int i = 999; i >= 0; --i) many.push_back(i);
  EXPECT_DOUBLE_EQ(Quantile(many, 0.75), 749.25);
}

TEST(DivergenceTest, SummarizesMeansDpplAndHistogram) {
  std::vector<ProbeDivergence> probes = {{0, 4, 1.0}, {2, 1, 2.0}, {4, 0, 0.5}, {4, 0, 0.0}};
  DivergenceSummary s = Summarize(probes, 4);
  EXPECT_DOUBLE_EQ(s.fdt_mean, 2.5);
  EXPECT_DOUBLE_EQ(s.sdt_mean, 1.25);
  EXPECT_DOUBLE_EQ(s.fdt75, 4.0);
  EXPECT_NEAR(s.dppl, (std::exp(1.0) + std::exp(2.0) + std::exp(0.5) + 1.0) / 4, 1e-12);
  EXPECT_EQ(s.fdt_histogram, (std::vector<int64_t>{1, 0, 1, 0, 2}));
}

}  // namespace
}  // namespace dtm
