// Each method against a direct loop implementation of its definition in SPEC, on small matrices.
#include "worker/engine/compression.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "tests/worker/engine/test_tensors.h"

namespace dtm {
namespace {

using testing::RandomValues;
using testing::ToTensor;
using testing::ToVector;

int64_t CountZeros(const std::vector<float>& v) { return std::count(v.begin(), v.end(), 0.0f); }

bool HaveCuda() { return torch::cuda::is_available(); }

// ---- loop implementations of the definitions

// Flat indices of the k smallest |w|, ties to the lower index.
std::set<int64_t> SmallestMagnitudes(const std::vector<float>& w, int64_t k) {
  std::vector<int64_t> idx(w.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) {
    float ma = std::fabs(w[a]), mb = std::fabs(w[b]);
    return ma != mb ? ma < mb : a < b;
  });
  return std::set<int64_t>(idx.begin(), idx.begin() + k);
}

// Symmetric int8 with absmax `amax` for the values v[begin, end) (torch::round = nearbyint: half even).
void AbsMaxLoop(const std::vector<float>& v, size_t begin, size_t end, std::vector<float>* out) {
  float amax = 0;
  for (size_t i = begin; i < end; ++i) amax = std::max(amax, std::fabs(v[i]));
  float s = amax / 127.0f;
  for (size_t i = begin; i < end; ++i) {
    float q = s > 0 ? std::clamp(std::nearbyint(v[i] / s), -127.0f, 127.0f) : 0.0f;
    (*out)[i] = q * s;
  }
}

// bitsandbytes' row-wise int8 of one row v[0, cols): the integers round(v * (127 / amax)), where
// amax is the largest |v[j]| over the entries `counted` (all when empty); zeros for amax 0.
std::vector<int64_t> QuantizeRowLoop(const std::vector<float>& v, const std::vector<bool>& counted, float* amax) {
  *amax = 0;
  for (size_t j = 0; j < v.size(); ++j) {
    if (counted.empty() || counted[j]) *amax = std::max(*amax, std::fabs(v[j]));
  }
  const float inv = *amax > 0 ? 127.0f / *amax : 0.0f;
  std::vector<int64_t> q(v.size());
  for (size_t j = 0; j < v.size(); ++j) q[j] = static_cast<int64_t>(std::nearbyint(v[j] * inv));
  return q;
}

// LLM.int8() y = x w^T as bitsandbytes computes it (see compression.h), x [n, in], w [out, in], with
// the outlier part's dequantized weight rounded through bfloat16 when `bf16_compute`.
std::vector<float> LlmInt8Loop(const std::vector<float>& x, const std::vector<float>& w, int64_t n,
                               int64_t in, int64_t out, double threshold, bool bf16_compute = false) {
  std::vector<bool> outlier(in, false);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < in; ++j) outlier[j] = outlier[j] || std::fabs(x[i * in + j]) >= threshold;
  }
  // Weights: whole rows. Activations: the absmax over the entries below the threshold, then the outlier
  // columns zeroed.
  std::vector<std::vector<int64_t>> qw(out), qx(n);
  std::vector<float> sw(out), sx(n);
  for (int64_t o = 0; o < out; ++o) {
    qw[o] = QuantizeRowLoop(std::vector<float>(w.begin() + o * in, w.begin() + (o + 1) * in), {}, &sw[o]);
  }
  for (int64_t i = 0; i < n; ++i) {
    std::vector<float> row(x.begin() + i * in, x.begin() + (i + 1) * in);
    std::vector<bool> below(in);
    for (int64_t j = 0; j < in; ++j) below[j] = std::fabs(row[j]) < threshold;
    for (int64_t j = 0; j < in; ++j) row[j] = below[j] ? row[j] : 0.0f;
    qx[i] = QuantizeRowLoop(row, below, &sx[i]);
    for (int64_t j = 0; j < in; ++j) qx[i][j] = outlier[j] ? 0 : qx[i][j];
  }
  std::vector<float> y(n * out);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      int64_t acc = 0;
      double fp = 0;
      for (int64_t j = 0; j < in; ++j) {
        acc += qx[i][j] * qw[o][j];
        if (!outlier[j]) continue;
        float deq = static_cast<float>(qw[o][j]) * (sw[o] / 127.0f);
        if (bf16_compute) deq = c10::BFloat16(deq);
        fp += static_cast<double>(x[i * in + j]) * deq;
      }
      const double scale = static_cast<double>(sx[i]) * static_cast<double>(sw[o]) / (127.0 * 127.0);
      y[i * out + o] = static_cast<float>(fp) + static_cast<float>(static_cast<double>(acc) * scale);
    }
  }
  return y;
}

// ---- MagnitudePrune

TEST(MagnitudePruneTest, ZeroesExactlyTheKSmallestMagnitudesAndKeepsTheRestBitExact) {
  std::vector<float> w = RandomValues(13 * 17, 1);
  for (double fraction : {0.3, 0.5, 0.01, 0.99}) {
    const int64_t k = std::llround(fraction * static_cast<double>(w.size()));
    std::vector<float> got = ToVector(MagnitudePrune(ToTensor(w, {13, 17}), fraction));
    std::set<int64_t> pruned = SmallestMagnitudes(w, k);
    EXPECT_EQ(CountZeros(got), k) << fraction;
    for (size_t i = 0; i < w.size(); ++i) {
      if (pruned.count(i)) {
        EXPECT_EQ(got[i], 0.0f) << "entry " << i;
      } else {
        EXPECT_EQ(got[i], w[i]) << "entry " << i;
      }
    }
  }
}

TEST(MagnitudePruneTest, FractionZeroKeepsEverythingAndOneZeroesEverything) {
  std::vector<float> w = RandomValues(6 * 5, 2);
  EXPECT_EQ(ToVector(MagnitudePrune(ToTensor(w, {6, 5}), 0.0)), w);
  EXPECT_EQ(CountZeros(ToVector(MagnitudePrune(ToTensor(w, {6, 5}), 1.0))), 30);
}

TEST(MagnitudePruneTest, BreaksTiesByTheLowerFlatIndex) {
  // Magnitudes: 1 x6 (at indices 1, 2, 4, 6, 7, 9), 2 x3, 3 x1.
  std::vector<float> w = {2, -1, 1, 3, -1, -2, 1, 1, 2, -1};
  std::vector<float> got = ToVector(MagnitudePrune(ToTensor(w, {2, 5}), 0.4));  // k = 4
  std::vector<float> want = {2, 0, 0, 3, 0, -2, 0, 1, 2, -1};
  EXPECT_EQ(got, want);
  // Cutting through the ties of magnitude 2 after all ones.
  got = ToVector(MagnitudePrune(ToTensor(w, {2, 5}), 0.8));  // k = 8
  want = {0, 0, 0, 3, 0, 0, 0, 0, 2, 0};
  EXPECT_EQ(got, want);
}

TEST(MagnitudePruneTest, CountsExistingZerosAsSmallestSoPruningComposes) {
  std::vector<float> w = RandomValues(10 * 10, 3);
  torch::Tensor once = MagnitudePrune(ToTensor(w, {10, 10}), 0.5);
  torch::Tensor twice = MagnitudePrune(MagnitudePrune(ToTensor(w, {10, 10}), 0.2), 0.5);
  EXPECT_EQ(ToVector(twice), ToVector(once));
}

TEST(MagnitudePruneTest, LeavesItsInputAloneAndReturnsFloat32ForBfloat16) {
  std::vector<float> w = RandomValues(4 * 8, 4);
  torch::Tensor input = ToTensor(w, {4, 8});
  torch::Tensor out = MagnitudePrune(input, 0.5);
  EXPECT_EQ(ToVector(input), w);
  torch::Tensor bf16 = input.to(torch::kBFloat16);
  torch::Tensor from_bf16 = MagnitudePrune(bf16, 0.5);
  EXPECT_EQ(from_bf16.scalar_type(), torch::kFloat32);
  EXPECT_EQ(from_bf16.sizes(), bf16.sizes());
  EXPECT_EQ(ToVector(from_bf16), ToVector(MagnitudePrune(bf16.to(torch::kFloat32), 0.5)));
}

// ---- RandomPrune

TEST(RandomPruneTest, ZeroesExactlyKEntriesAndKeepsTheRestBitExact) {
  std::vector<float> w = RandomValues(9 * 11, 5);
  for (double fraction : {0.0, 0.25, 0.5, 1.0}) {
    std::vector<float> got = ToVector(RandomPrune(ToTensor(w, {9, 11}), fraction, 7));
    EXPECT_EQ(CountZeros(got), std::llround(fraction * 99)) << fraction;
    for (size_t i = 0; i < w.size(); ++i) {
      if (got[i] != 0.0f) {
        EXPECT_EQ(got[i], w[i]) << "entry " << i;
      }
    }
  }
}

TEST(RandomPruneTest, SameSeedGivesTheSameMaskAndDifferentSeedsDiffer) {
  std::vector<float> w = RandomValues(16 * 16, 6);
  std::vector<float> a = ToVector(RandomPrune(ToTensor(w, {16, 16}), 0.5, 1));
  std::vector<float> b = ToVector(RandomPrune(ToTensor(w, {16, 16}), 0.5, 1));
  std::vector<float> c = ToVector(RandomPrune(ToTensor(w, {16, 16}), 0.5, 2));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(RandomPruneTest, DoesNotPickTheSmallestMagnitudes) {
  std::vector<float> w = RandomValues(32 * 32, 7);
  std::vector<float> got = ToVector(RandomPrune(ToTensor(w, {32, 32}), 0.5, 3));
  std::set<int64_t> smallest = SmallestMagnitudes(w, 512);
  int64_t overlap = 0;
  for (int64_t i : smallest) overlap += got[i] == 0.0f;
  EXPECT_GT(overlap, 200);  // about 256 expected by chance, 512 for magnitude pruning
  EXPECT_LT(overlap, 312);
}

// ---- AbsMaxInt8, AbsMaxInt8Rows

TEST(AbsMaxInt8Test, MatchesTheLoopImplementationElementByElement) {
  std::vector<float> w = RandomValues(7 * 9, 8, 0.02f);
  w[10] = 0.3f;  // one large value sets the scale
  std::vector<float> want(w.size());
  AbsMaxLoop(w, 0, w.size(), &want);
  std::vector<float> got = ToVector(AbsMaxInt8(ToTensor(w, {7, 9})));
  EXPECT_EQ(got, want);
  const float s = 0.3f / 127.0f;
  for (size_t i = 0; i < w.size(); ++i) {
    float steps = got[i] / s;
    EXPECT_NEAR(steps, std::nearbyint(steps), 1e-3) << "entry " << i << " is not a multiple of the scale";
    EXPECT_LE(std::fabs(steps), 127.0f + 1e-3f);
    EXPECT_LE(std::fabs(got[i] - w[i]), s / 2 * (1 + 1e-5f)) << "entry " << i;
  }
  EXPECT_EQ(got[10], 0.3f);
}

TEST(AbsMaxInt8Test, KeepsAnAllZeroMatrixZero) {
  std::vector<float> got = ToVector(AbsMaxInt8(torch::zeros({3, 4})));
  EXPECT_EQ(CountZeros(got), 12);
}

TEST(AbsMaxInt8Test, RowsMatchTheLoopImplementationWithOneScalePerRow) {
  const int64_t rows = 6, cols = 10;
  std::vector<float> w = RandomValues(rows * cols, 9);
  for (int64_t j = 0; j < cols; ++j) w[2 * cols + j] = 0.0f;      // a zero row
  for (int64_t j = 0; j < cols; ++j) w[4 * cols + j] *= 1000.0f;  // a row of another scale
  std::vector<float> want(w.size());
  for (int64_t r = 0; r < rows; ++r) AbsMaxLoop(w, r * cols, (r + 1) * cols, &want);
  std::vector<float> got = ToVector(AbsMaxInt8Rows(ToTensor(w, {rows, cols})));
  EXPECT_EQ(got, want);
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t j = 0; j < cols; ++j) amax = std::max(amax, std::fabs(w[r * cols + j]));
    const float s = amax / 127.0f;
    for (int64_t j = 0; j < cols; ++j) {
      const size_t i = r * cols + j;
      if (s == 0) {
        EXPECT_EQ(got[i], 0.0f);
        continue;
      }
      EXPECT_NEAR(got[i] / s, std::nearbyint(got[i] / s), 1e-3) << "entry " << i;
      EXPECT_LE(std::fabs(got[i] - w[i]), s / 2 * (1 + 1e-5f)) << "entry " << i;
    }
  }
}

TEST(AbsMaxInt8Test, RowsAcceptBfloat16AndReturnFloat32OfTheSameShape) {
  torch::Tensor w = ToTensor(RandomValues(5 * 3, 10), {5, 3}).to(torch::kBFloat16);
  torch::Tensor got = AbsMaxInt8Rows(w);
  EXPECT_EQ(got.scalar_type(), torch::kFloat32);
  EXPECT_EQ(got.sizes(), w.sizes());
  EXPECT_EQ(ToVector(got), ToVector(AbsMaxInt8Rows(w.to(torch::kFloat32))));
}

// ---- LlmInt8Matmul

TEST(LlmInt8MatmulTest, MatchesAHandComputationOfTheBitsandbytesSteps) {
  // x [2, 4], w [2, 4], threshold 6.
  //   x = [ 1    8   2    -0.5 ]     w = [ 127    10.4  -3.5    2.5 ]
  //       [ 4    5  -1.5  -6   ]         [ -63.5  20    15.75   0.6 ]
  // Outlier columns: 1 (the 8) and 3 (the -6: bitsandbytes' test is >=).
  // Weights, whole rows: scb = [127, 63.5], so 127 / scb = [1, 2]:
  //   cb = [ 127  10  -4  2 ]   (-3.5 and 2.5 round half to even)
  //        [-127  40  32  1 ]   (15.75 * 2 = 31.5 -> 32; 0.6 * 2 = 1.2 -> 1)
  // Activations: each row's absmax leaves out the outlier values (8 and -6) but not the other entries of
  // the outlier columns: sx = [max(1, 2, 0.5), max(4, 5, 1.5)] = [2, 5], so 127 / sx = [63.5, 25.4]:
  //   qx = [ 64   0  127  0 ]   (63.5 -> 64; columns 1 and 3 zeroed after quantizing)
  //        [ 102  0  -38  0 ]   (101.6 -> 102, -38.1 -> -38)
  // Integer product over columns 0 and 2, then * sx[i] * scb[o] / 127^2:
  //   [ 64*127 + 127*-4 = 7620,       64*-127 + 127*32 = -4064 ]   ->  [ 7620*2/127 = 120,  -4064/127 = -32 ]
  //   [ 102*127 + -38*-4 = 13106, 102*-127 + -38*32 = -14170 ]     ->  [ 65530/127,         -35425/127 ]
  // Outlier part with the DEQUANTIZED weight columns cb * scb / 127: column 1 = [10, 20] (not 10.4),
  // column 3 = [2, 0.5]:
  //   [ 8*10 - 0.5*2 = 79,   8*20 - 0.5*0.5 = 159.75 ]
  //   [ 5*10 - 6*2 = 38,     5*20 - 6*0.5 = 97       ]
  std::vector<float> x = {1, 8, 2, -0.5f, 4, 5, -1.5f, -6};
  std::vector<float> w = {127, 10.4f, -3.5f, 2.5f, -63.5f, 20, 15.75f, 0.6f};
  const std::vector<double> want = {120 + 79, -32 + 159.75, 65530.0 / 127 + 38, -35425.0 / 127 + 97};

  LlmInt8Weight q = QuantizeLlmInt8Weight(ToTensor(w, {2, 4}));
  EXPECT_EQ(ToVector(q.cb), (std::vector<float>{127, 10, -4, 2, -127, 40, 32, 1}));
  EXPECT_EQ(ToVector(q.scb), (std::vector<float>{127, 63.5f}));
  torch::Tensor mask;
  std::vector<float> got = ToVector(LlmInt8Matmul(ToTensor(x, {2, 4}), q, 6.0, &mask));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-4) << "output " << i;
  EXPECT_EQ(ToVector(mask), (std::vector<float>{0, 1, 0, 1}));
  EXPECT_EQ(ToVector(LlmInt8Matmul(ToTensor(x, {2, 4}), ToTensor(w, {2, 4}))), got);
}

TEST(LlmInt8MatmulTest, MatchesTheLoopImplementationWithOutlierColumns) {
  const int64_t n = 5, in = 16, out = 6;
  std::vector<float> x = RandomValues(n * in, 11);
  std::vector<float> w = RandomValues(out * in, 12, 0.1f);
  x[1 * in + 3] = 8.0f;    // column 3 is an outlier through one position
  x[4 * in + 11] = -9.5f;  // column 11 too, negative
  x[2 * in + 7] = 6.0f;    // exactly the threshold: an outlier
  x[3 * in + 9] = 5.99f;   // just below: not one
  std::vector<float> want = LlmInt8Loop(x, w, n, in, out, 6.0);
  torch::Tensor mask;
  std::vector<float> got =
      ToVector(LlmInt8Matmul(ToTensor(x, {n, in}), QuantizeLlmInt8Weight(ToTensor(w, {out, in})), 6.0, &mask));
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5) << "output " << i;
  std::vector<float> outliers = ToVector(mask);
  for (int64_t j = 0; j < in; ++j) EXPECT_EQ(outliers[j], j == 3 || j == 7 || j == 11 ? 1.0f : 0.0f) << j;

  // Without the outlier decomposition the large values would have crushed their rows' int8 scales.
  std::vector<float> plain = LlmInt8Loop(x, w, n, in, out, std::numeric_limits<double>::infinity());
  double diff = 0;
  for (size_t i = 0; i < got.size(); ++i)
    diff = std::max(diff, std::fabs(static_cast<double>(plain[i]) - got[i]));
  EXPECT_GT(diff, 1e-3);
}

TEST(LlmInt8MatmulTest, WithoutOutliersEqualsTheVectorWiseInt8ProductExactly) {
  // in > 1024 so that the exact integer product runs over several chunks.
  const int64_t n = 4, in = 2500, out = 3;
  std::vector<float> x = RandomValues(n * in, 13, 3.0f);
  std::vector<float> w = RandomValues(out * in, 14);
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<float> want = LlmInt8Loop(x, w, n, in, out, inf);
  EXPECT_EQ(ToVector(LlmInt8Matmul(ToTensor(x, {n, in}), ToTensor(w, {out, in}), inf)), want);
}

TEST(LlmInt8MatmulTest, WithEveryColumnAnOutlierIsTheProductWithTheDequantizedWeight) {
  const int64_t n = 3, in = 8, out = 5;
  std::vector<float> x = RandomValues(n * in, 15);
  std::vector<float> w = RandomValues(out * in, 16);
  torch::Tensor xt = ToTensor(x, {n, in}), wt = ToTensor(w, {out, in});
  std::vector<float> got = ToVector(LlmInt8Matmul(xt, wt, /*threshold=*/0.0));
  std::vector<float> plain_product = ToVector(torch::matmul(xt, wt.t()));
  LlmInt8Weight q = QuantizeLlmInt8Weight(wt);
  std::vector<float> cb = ToVector(q.cb), scb = ToVector(q.scb);
  bool differs_from_float_weight = false;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double dot = 0;
      for (int64_t j = 0; j < in; ++j) dot += static_cast<double>(x[i * in + j]) * cb[o * in + j] * scb[o] / 127.0;
      EXPECT_NEAR(got[i * out + o], dot, 1e-5);
      differs_from_float_weight |= std::fabs(got[i * out + o] - plain_product[i * out + o]) > 1e-4;
    }
  }
  EXPECT_TRUE(differs_from_float_weight);  // the outlier weight columns are not kept exact
}

TEST(LlmInt8MatmulTest, KeepsLeadingDimensionsAndFindsOutliersOverAllPositions) {
  const int64_t in = 12, out = 4;
  std::vector<float> x = RandomValues(2 * 3 * in, 17);
  x[5 * in + 2] = 7.0f;  // the last position of the second sequence
  std::vector<float> w = RandomValues(out * in, 18);
  torch::Tensor got = LlmInt8Matmul(ToTensor(x, {2, 3, in}), ToTensor(w, {out, in}).to(torch::kBFloat16));
  ASSERT_EQ(got.sizes(), (std::vector<int64_t>{2, 3, out}));
  std::vector<float> w_bf16 = ToVector(ToTensor(w, {out, in}).to(torch::kBFloat16));
  std::vector<float> want = LlmInt8Loop(x, w_bf16, 6, in, out, 6.0);
  std::vector<float> flat = ToVector(got);
  for (size_t i = 0; i < flat.size(); ++i) EXPECT_NEAR(flat[i], want[i], 1e-5) << "output " << i;
}

TEST(LlmInt8MatmulTest, RoundsTheDequantizedOutlierWeightsToTheInputsDtype) {
  const int64_t n = 4, in = 10, out = 3;
  std::vector<float> x = RandomValues(n * in, 22);
  x[2 * in + 5] = 12.0f;
  x = ToVector(ToTensor(x, {n, in}).to(torch::kBFloat16));  // values a bf16 x holds exactly
  std::vector<float> w = RandomValues(out * in, 23);
  torch::Tensor got = LlmInt8Matmul(ToTensor(x, {n, in}).to(torch::kBFloat16), ToTensor(w, {out, in}));
  EXPECT_EQ(got.scalar_type(), torch::kFloat32);
  std::vector<float> want = LlmInt8Loop(x, w, n, in, out, 6.0, /*bf16_compute=*/true);
  std::vector<float> unrounded = LlmInt8Loop(x, w, n, in, out, 6.0, /*bf16_compute=*/false);
  std::vector<float> flat = ToVector(got);
  double off_unrounded = 0;
  for (size_t i = 0; i < flat.size(); ++i) {
    EXPECT_NEAR(flat[i], want[i], 1e-5) << "output " << i;
    off_unrounded = std::max(off_unrounded, std::fabs(static_cast<double>(flat[i]) - unrounded[i]));
  }
  EXPECT_GT(off_unrounded, 1e-4);  // bf16 has 8 significant bits: the rounding shows
}

// ---- the same results on CUDA

TEST(CompressionTest, GivesTheSameResultsOnCudaAsOnCpu) {
  if (!HaveCuda()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA);
  torch::Tensor w = ToTensor(RandomValues(64 * 48, 19), {64, 48});
  torch::Tensor wc = w.to(cuda);
  EXPECT_EQ(ToVector(MagnitudePrune(wc, 0.37)), ToVector(MagnitudePrune(w, 0.37)));
  EXPECT_EQ(ToVector(RandomPrune(wc, 0.37, 5)), ToVector(RandomPrune(w, 0.37, 5)));
  EXPECT_EQ(ToVector(AbsMaxInt8(wc)), ToVector(AbsMaxInt8(w)));
  EXPECT_EQ(ToVector(AbsMaxInt8Rows(wc)), ToVector(AbsMaxInt8Rows(w)));
  EXPECT_TRUE(MagnitudePrune(wc.to(torch::kBFloat16), 0.5).is_cuda());

  torch::Tensor x = ToTensor(RandomValues(10 * 2100, 20, 2.0f), {10, 2100});
  const double inf = std::numeric_limits<double>::infinity();
  torch::Tensor w_wide = ToTensor(RandomValues(7 * 2100, 21), {7, 2100});
  // Without outliers the result is exact on both devices.
  EXPECT_EQ(ToVector(LlmInt8Matmul(x.to(cuda), w_wide.to(cuda), inf)),
            ToVector(LlmInt8Matmul(x, w_wide, inf)));
  torch::Tensor y_gpu = LlmInt8Matmul(x.to(cuda), w_wide.to(cuda));  // with outlier columns
  EXPECT_TRUE(y_gpu.is_cuda());
  EXPECT_TRUE(torch::allclose(y_gpu.cpu(), LlmInt8Matmul(x, w_wide), 1e-5, 1e-4));
}

}  // namespace
}  // namespace dtm
