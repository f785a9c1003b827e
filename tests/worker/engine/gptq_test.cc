// GPTQ against direct loop implementations: round-to-nearest with quant.py's min-max quantizer, and
// the unblocked GPTQ recursion with its Cholesky factors written out in double precision.
#include "worker/engine/gptq.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <set>
#include <vector>

#include "worker/engine/compression.h"

#include "tests/worker/engine/test_tensors.h"

namespace dtm {
namespace {

using Matrix = std::vector<double>;  // row-major

using testing::RandomValues;
using testing::ToTensor;
using testing::ToVector;

// X = Z A: rows of Z [n, in] independent, A [in, in] mixes the features so that they are correlated.
std::vector<float> CorrelatedInputs(int64_t n, int64_t in, uint32_t seed) {
  std::vector<float> z = RandomValues(n * in, seed), a = RandomValues(in * in, seed + 1);
  std::vector<float> x(n * in, 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t k = 0; k < in; ++k) {
      for (int64_t j = 0; j < in; ++j) x[i * in + j] += z[i * in + k] * a[k * in + j];
    }
  }
  return x;
}

// 2/n X^T X, X [n, in].
std::vector<float> HessianLoop(const std::vector<float>& x, int64_t n, int64_t in) {
  std::vector<float> h(in * in);
  for (int64_t a = 0; a < in; ++a) {
    for (int64_t b = 0; b < in; ++b) {
      double s = 0;
      for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i * in + a]) * x[i * in + b];
      h[a * in + b] = static_cast<float>(2.0 * s / static_cast<double>(n));
    }
  }
  return h;
}

// ||X W^T - X Q^T||_F in double.
double OutputError(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& q,
                   int64_t n, int64_t in, int64_t out) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t o = 0; o < out; ++o) {
      double d = 0;
      for (int64_t j = 0; j < in; ++j)
        d += static_cast<double>(x[i * in + j]) * (w[o * in + j] - q[o * in + j]);
      sum += d * d;
    }
  }
  return std::sqrt(sum);
}

// quant.py's Quantizer for one row's values, in float32 as the implementation computes it.
struct LoopQuantizer {
  float scale = 1, zero = 0, maxq = 1;

  LoopQuantizer(const std::vector<float>& values, int bits, bool symmetric) {
    maxq = static_cast<float>((1 << bits) - 1);
    float xmin = 0, xmax = 0;  // the range always includes 0
    for (float v : values) xmin = std::min(xmin, v), xmax = std::max(xmax, v);
    if (symmetric) {
      xmax = std::max(std::fabs(xmin), xmax);
      if (xmin < 0) xmin = -xmax;
    }
    if (xmin == 0 && xmax == 0) xmin = -1, xmax = 1;
    scale = (xmax - xmin) / maxq;
    zero = symmetric ? (maxq + 1) / 2 : std::nearbyint(-xmin / scale);
  }
  float operator()(float x) const {
    float q = std::clamp(std::nearbyint(x / scale) + zero, 0.0f, maxq);
    return scale * (q - zero);
  }
};

// Round to nearest with the quantizer fitted per row (group_size 0) or per group of the row.
std::vector<float> RtnLoop(const std::vector<float>& w, int64_t out, int64_t in, int bits, int group_size = 0,
                           bool symmetric = false) {
  const int64_t g = group_size > 0 ? group_size : in;
  std::vector<float> q(w.size());
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t c0 = 0; c0 < in; c0 += g) {
      const int64_t c1 = std::min(in, c0 + g);
      LoopQuantizer quantizer(std::vector<float>(w.begin() + r * in + c0, w.begin() + r * in + c1), bits,
                              symmetric);
      for (int64_t c = c0; c < c1; ++c) q[r * in + c] = quantizer(w[r * in + c]);
    }
  }
  return q;
}

// Lower Cholesky factor of the SPD matrix a [n, n].
Matrix CholeskyLoop(const Matrix& a, int64_t n) {
  Matrix l(n * n, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= l[j * n + k] * l[j * n + k];
    l[j * n + j] = std::sqrt(d);
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = s / l[j * n + j];
    }
  }
  return l;
}

// The inverse of a = l l^T, column by column by forward and back substitution.
Matrix InverseLoop(const Matrix& l, int64_t n) {
  Matrix inv(n * n, 0.0);
  std::vector<double> y(n);
  for (int64_t c = 0; c < n; ++c) {
    for (int64_t i = 0; i < n; ++i) {  // l y = e_c
      double s = i == c ? 1.0 : 0.0;
      for (int64_t k = 0; k < i; ++k) s -= l[i * n + k] * y[k];
      y[i] = s / l[i * n + i];
    }
    for (int64_t i = n - 1; i >= 0; --i) {  // l^T x = y
      double s = y[i];
      for (int64_t k = i + 1; k < n; ++k) s -= l[k * n + i] * inv[k * n + c];
      inv[i * n + c] = s / l[i * n + i];
    }
  }
  return inv;
}

// GPTQ as the paper writes it, without lazy blocks: quantize column i, then subtract its scaled error
// from every later column at once. The quantizer of a group is fitted on the group's columns as they
// stand when the group starts (the blocked implementation agrees when groups start on block starts).
std::vector<float> GptqLoop(const std::vector<float>& w, const std::vector<float>& h, int64_t out, int64_t in,
                            int bits, int group_size = 0) {
  std::vector<double> wd(w.begin(), w.end());
  Matrix hd(h.begin(), h.end());
  std::vector<LoopQuantizer> quantizers;
  for (int64_t r = 0; r < out; ++r) {
    quantizers.emplace_back(std::vector<float>(w.begin() + r * in, w.begin() + (r + 1) * in), bits, false);
  }
  double mean_diag = 0;
  for (int64_t i = 0; i < in; ++i) {
    if (hd[i * in + i] == 0) {
      hd[i * in + i] = 1;
      for (int64_t r = 0; r < out; ++r) wd[r * in + i] = 0;
    }
    mean_diag += hd[i * in + i] / static_cast<double>(in);
  }
  for (int64_t i = 0; i < in; ++i) hd[i * in + i] += 0.01 * mean_diag;
  Matrix lower = CholeskyLoop(InverseLoop(CholeskyLoop(hd, in), in), in);  // upper factor = lower^T
  auto upper = [&](int64_t i, int64_t j) { return lower[j * in + i]; };
  std::vector<float> q(w.size());
  for (int64_t i = 0; i < in; ++i) {
    for (int64_t r = 0; r < out; ++r) {
      if (group_size > 0 && i % group_size == 0) {
        std::vector<float> group;
        for (int64_t c = i; c < std::min<int64_t>(in, i + group_size); ++c)
          group.push_back(static_cast<float>(wd[r * in + c]));
        quantizers[r] = LoopQuantizer(group, bits, false);
      }
      q[r * in + i] = quantizers[r](static_cast<float>(wd[r * in + i]));
      const double err = (wd[r * in + i] - q[r * in + i]) / upper(i, i);
      for (int64_t j = i + 1; j < in; ++j) wd[r * in + j] -= err * upper(i, j);
    }
  }
  return q;
}

// Distinct values of row r over columns [c0, c1).
size_t DistinctValues(const std::vector<float>& q, int64_t in, int64_t r, int64_t c0, int64_t c1) {
  return std::set<float>(q.begin() + r * in + c0, q.begin() + r * in + c1).size();
}

torch::Tensor Identity(int64_t n) { return torch::eye(n, torch::kFloat32); }

// (C++17 has no designated initializers.)
GptqOptions Options(int bits, int group_size = 0, int block_size = 128, bool symmetric = false) {
  GptqOptions opts;
  opts.bits = bits;
  opts.group_size = group_size;
  opts.block_size = block_size;
  opts.symmetric = symmetric;
  return opts;
}

class GptqTest : public ::testing::Test {
 protected:
  // A layer [out, in] = [64, 128] and its correlated calibration inputs X [512, 128].
  static constexpr int64_t kOut = 64, kIn = 128, kRows = 512;
  std::vector<float> w_ = RandomValues(kOut * kIn, 100);
  std::vector<float> x_ = CorrelatedInputs(kRows, kIn, 200);
  std::vector<float> h_ = HessianLoop(x_, kRows, kIn);

  std::vector<float> Gptq(const GptqOptions& opts) {
    StatusOr<torch::Tensor> q = GptqQuantize(ToTensor(w_, {kOut, kIn}), ToTensor(h_, {kIn, kIn}), opts);
    EXPECT_TRUE(q.ok()) << q.status().ToString();
    return q.ok() ? ToVector(*q) : std::vector<float>(w_.size());
  }
};

TEST_F(GptqTest, WithADiagonalHessianEqualsRoundToNearest) {
  for (int bits : {2, 3, 4, 8}) {
    for (bool symmetric : {false, true}) {
      GptqOptions opts = Options(bits, 0, 16, symmetric);
      StatusOr<torch::Tensor> q = GptqQuantize(ToTensor(w_, {kOut, kIn}), Identity(kIn), opts);
      ASSERT_TRUE(q.ok()) << q.status().ToString();
      EXPECT_EQ(ToVector(*q), RtnLoop(w_, kOut, kIn, bits, 0, symmetric)) << bits << " bits";
    }
  }
  // Any positive diagonal: the off-diagonal factors are zero, so no error moves to other columns.
  torch::Tensor diagonal = torch::diag(torch::rand({kIn}) + 0.1);
  StatusOr<torch::Tensor> q = GptqQuantize(ToTensor(w_, {kOut, kIn}), diagonal, Options(3));
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(ToVector(*q), RtnLoop(w_, kOut, kIn, 3));
}

TEST_F(GptqTest, WithADiagonalHessianAndGroupsEqualsGroupWiseRoundToNearest) {
  for (int group : {32, 24, 128}) {
    GptqOptions opts = Options(3, group, 16);
    StatusOr<torch::Tensor> q = GptqQuantize(ToTensor(w_, {kOut, kIn}), Identity(kIn), opts);
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    EXPECT_EQ(ToVector(*q), RtnLoop(w_, kOut, kIn, 3, group)) << "group " << group;
  }
}

TEST_F(GptqTest, MatchesTheUnblockedRecursionComputedInDouble) {
  for (int bits : {3, 4, 8}) {
    for (int group : {0, 32}) {
      std::vector<float> want = GptqLoop(w_, h_, kOut, kIn, bits, group);
      std::vector<float> got = Gptq(Options(bits, group, 16));
      // float32 against double: a rounding decision may flip here and there, and then its row drifts.
      int64_t same = 0;
      for (size_t i = 0; i < got.size(); ++i)
        same += std::fabs(got[i] - want[i]) <= 1e-4f * (1 + std::fabs(want[i]));
      EXPECT_GT(same, static_cast<int64_t>(0.97 * got.size())) << bits << " bits, group " << group;
      double e_got = OutputError(x_, w_, got, kRows, kIn, kOut),
             e_want = OutputError(x_, w_, want, kRows, kIn, kOut);
      EXPECT_NEAR(e_got, e_want, 0.02 * e_want) << bits << " bits, group " << group;
    }
  }
}

TEST_F(GptqTest, BeatsRoundToNearestAndRowWiseAbsMaxOnCorrelatedInputs) {
  const double absmax_rows =
      OutputError(x_, w_, ToVector(AbsMaxInt8Rows(ToTensor(w_, {kOut, kIn}))), kRows, kIn, kOut);
  double gptq_error[9] = {}, rtn_error[9] = {};
  for (int bits : {4, 8}) {
    gptq_error[bits] = OutputError(x_, w_, Gptq(Options(bits)), kRows, kIn, kOut);
    rtn_error[bits] = OutputError(x_, w_, RtnLoop(w_, kOut, kIn, bits), kRows, kIn, kOut);
    EXPECT_LT(gptq_error[bits], 0.8 * rtn_error[bits]) << bits << " bits";
  }
  // 8-bit GPTQ against 8-bit AbsMax (4-bit GPTQ has 16 times coarser steps than either).
  EXPECT_LT(gptq_error[8], absmax_rows);
  std::printf("output error: gptq4 %.4g rtn4 %.4g gptq8 %.4g rtn8 %.4g absmax-row %.4g\n", gptq_error[4],
              rtn_error[4], gptq_error[8], rtn_error[8], absmax_rows);
}

TEST_F(GptqTest, EveryRowTakesAtMostTwoToTheBitsValues) {
  for (int bits : {2, 3, 4}) {
    std::vector<float> q = Gptq(Options(bits));
    for (int64_t r = 0; r < kOut; ++r) {
      EXPECT_LE(DistinctValues(q, kIn, r, 0, kIn), size_t{1} << bits)
          << "row " << r << ", " << bits << " bits";
    }
  }
}

TEST_F(GptqTest, EveryGroupOfARowTakesAtMostTwoToTheBitsValues) {
  // Group 24 does not divide the 128 columns and its groups start inside blocks of 16.
  for (int group : {32, 24}) {
    std::vector<float> q = Gptq(Options(2, group, 16));
    size_t most_in_a_row = 0;
    for (int64_t r = 0; r < kOut; ++r) {
      for (int64_t c0 = 0; c0 < kIn; c0 += group) {
        EXPECT_LE(DistinctValues(q, kIn, r, c0, std::min(kIn, c0 + group)), 4u)
            << "row " << r << " column " << c0;
      }
      most_in_a_row = std::max(most_in_a_row, DistinctValues(q, kIn, r, 0, kIn));
    }
    EXPECT_GT(most_in_a_row, 4u) << "groups have their own scales";
  }
}

TEST_F(GptqTest, ZeroesDeadInputColumnsAndStaysFinite) {
  // Inputs 5 and 17 are always zero: their Hessian rows and columns vanish.
  std::vector<float> x = x_;
  for (int64_t i = 0; i < kRows; ++i) x[i * kIn + 5] = x[i * kIn + 17] = 0.0f;
  std::vector<float> h = HessianLoop(x, kRows, kIn);
  StatusOr<torch::Tensor> q = GptqQuantize(ToTensor(w_, {kOut, kIn}), ToTensor(h, {kIn, kIn}), GptqOptions{});
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_TRUE(torch::isfinite(*q).all().item<bool>());
  std::vector<float> got = ToVector(*q);
  for (int64_t r = 0; r < kOut; ++r) {
    EXPECT_EQ(got[r * kIn + 5], 0.0f);
    EXPECT_EQ(got[r * kIn + 17], 0.0f);
  }
  std::vector<float> want = GptqLoop(w_, h, kOut, kIn, 4);
  EXPECT_NEAR(OutputError(x, w_, got, kRows, kIn, kOut), OutputError(x, w_, want, kRows, kIn, kOut),
              0.02 * OutputError(x, w_, want, kRows, kIn, kOut));
}

TEST_F(GptqTest, AcceptsBfloat16WeightsAndReturnsFloat32) {
  torch::Tensor w = ToTensor(w_, {kOut, kIn}).to(torch::kBFloat16);
  StatusOr<torch::Tensor> q = GptqQuantize(w, ToTensor(h_, {kIn, kIn}).to(torch::kFloat64), GptqOptions{});
  ASSERT_TRUE(q.ok()) << q.status().ToString();
  EXPECT_EQ(q->scalar_type(), torch::kFloat32);
  EXPECT_EQ(q->sizes(), w.sizes());
  StatusOr<torch::Tensor> from_f32 =
      GptqQuantize(w.to(torch::kFloat32), ToTensor(h_, {kIn, kIn}), GptqOptions{});
  ASSERT_TRUE(from_f32.ok());
  EXPECT_TRUE(torch::allclose(*q, *from_f32, 1e-4, 1e-4));
}

TEST_F(GptqTest, RejectsAHessianThatIsNotPositiveDefinite) {
  torch::Tensor w = ToTensor(RandomValues(3 * 2, 1), {3, 2});
  torch::Tensor indefinite = torch::tensor({1.0f, 2.0f, 2.0f, 1.0f}).reshape({2, 2});  // eigenvalues -1, 3
  StatusOr<torch::Tensor> q = GptqQuantize(w, indefinite, GptqOptions{});
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(q.status().message().find("not positive definite"), std::string::npos) << q.status().message();
  StatusOr<torch::Tensor> nan = GptqQuantize(w, torch::full({2, 2}, NAN), GptqOptions{});
  ASSERT_FALSE(nan.ok());
  EXPECT_NE(nan.status().message().find("not finite"), std::string::npos) << nan.status().message();
}

TEST_F(GptqTest, RejectsShapesAndOptionsThatDoNotFit) {
  torch::Tensor w = torch::randn({3, 4});
  StatusOr<torch::Tensor> q = GptqQuantize(w, Identity(3), GptqOptions{});
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(q.status().message().find("[3, 3]"), std::string::npos) << q.status().message();
  EXPECT_FALSE(GptqQuantize(torch::randn({4}), Identity(4), GptqOptions{}).ok());
  EXPECT_FALSE(GptqQuantize(w, Identity(4), Options(0)).ok());
  EXPECT_FALSE(GptqQuantize(w, Identity(4), Options(17)).ok());
  EXPECT_FALSE(GptqQuantize(w, Identity(4), Options(4, -1)).ok());
  EXPECT_FALSE(GptqQuantize(w, Identity(4), Options(4, 0, 0)).ok());
  GptqOptions negative_damp;
  negative_damp.percdamp = -0.1;
  EXPECT_FALSE(GptqQuantize(w, Identity(4), negative_damp).ok());
}

TEST(HessianAccumulatorTest, EqualsTwoOverNTimesXTransposeXOverAllRows) {
  const int64_t n = 300, in = 24;
  std::vector<float> x = RandomValues(n * in, 300);
  torch::Tensor xt = ToTensor(x, {n, in});
  HessianAccumulator acc(in, torch::kCPU);
  acc.Add(xt.slice(0, 0, 100));  // [100, in]
  acc.Add(xt[100]);              // one row, [in]
  acc.Add(xt.slice(0, 101, 299).reshape({2, 99, in}).to(torch::kBFloat16).to(torch::kFloat32));
  acc.Add(xt.slice(0, 299, 300).reshape({1, 1, in}).to(torch::kFloat64));
  acc.Add(torch::zeros({0, in}));  // nothing
  EXPECT_EQ(acc.num_samples(), n);
  // The bf16 round trip above changed those rows: build the reference from what was added.
  std::vector<float> added = ToVector(
      torch::cat({xt.slice(0, 0, 101), xt.slice(0, 101, 299).to(torch::kBFloat16).to(torch::kFloat32),
                  xt.slice(0, 299, 300)}));
  std::vector<float> want = HessianLoop(added, n, in);
  std::vector<float> got = ToVector(acc.hessian());
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << i;
}

TEST(HessianAccumulatorTest, StartsAtZero) {
  HessianAccumulator acc(5, torch::kCPU);
  EXPECT_EQ(acc.num_samples(), 0);
  EXPECT_EQ(acc.hessian().sizes(), (std::vector<int64_t>{5, 5}));
  EXPECT_EQ(acc.hessian().abs().sum().item<float>(), 0.0f);
}

TEST_F(GptqTest, GivesTheSameResultOnCudaAsOnCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA);
  HessianAccumulator acc(kIn, cuda);
  acc.Add(ToTensor(x_, {kRows, kIn}).to(cuda));
  EXPECT_TRUE(torch::allclose(acc.hessian().cpu(), ToTensor(h_, {kIn, kIn}), 1e-4, 1e-3));
  for (int group : {0, 32}) {
    GptqOptions opts = Options(4, group);
    StatusOr<torch::Tensor> q = GptqQuantize(ToTensor(w_, {kOut, kIn}).to(cuda), acc.hessian(), opts);
    ASSERT_TRUE(q.ok()) << q.status().ToString();
    EXPECT_TRUE(q->is_cuda());
    std::vector<float> got = ToVector(*q), want = Gptq(opts);
    int64_t same = 0;
    for (size_t i = 0; i < got.size(); ++i)
      same += std::fabs(got[i] - want[i]) <= 1e-4f * (1 + std::fabs(want[i]));
    EXPECT_GT(same, static_cast<int64_t>(0.97 * got.size()));
    double e_got = OutputError(x_, w_, got, kRows, kIn, kOut),
           e_want = OutputError(x_, w_, want, kRows, kIn, kOut);
    EXPECT_NEAR(e_got, e_want, 0.02 * e_want);
  }
}

}  // namespace
}  // namespace dtm
