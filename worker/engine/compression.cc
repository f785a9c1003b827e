#include "worker/engine/compression.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

namespace dtm {
namespace {

// A contiguous float32 copy that never aliases `w`: the pruning functions write into it.
torch::Tensor Float32Copy(const torch::Tensor& w) {
  return w.to(w.options().dtype(torch::kFloat32), /*non_blocking=*/false, /*copy=*/true,
              torch::MemoryFormat::Contiguous);
}

// k = llround(fraction * numel), with fraction clamped to [0, 1] (NaN counts as 0).
int64_t PruneCount(double fraction, int64_t numel) {
  double f = fraction >= 0.0 ? std::min(fraction, 1.0) : 0.0;
  return std::clamp<int64_t>(std::llround(f * static_cast<double>(numel)), 0, numel);
}

// Divides by a tensor that lives on the same device. Dividing by a Scalar would let CUDA multiply by
// its reciprocal instead, which can differ from the division by an ulp and break CPU/GPU agreement.
torch::Tensor DivideBy127(const torch::Tensor& t) { return t / torch::full({}, 127.0, t.options()); }

// Symmetric int8 codes of `wf` (float32 [out, in]) with absmax `amax` ([1] or [out, 1]): the scale
// is amax / 127, values are rounded (half to even) and clamped to [-127, 127]. A zero amax (an
// all-zero slice) divides by 1 instead, so the slice stays zero rather than turning NaN.
IntegerWeight AbsMaxCodes(const torch::Tensor& wf, const torch::Tensor& amax, QuantGranularity granularity) {
  IntegerWeight iw;
  iw.bits = 8;
  iw.symmetric = true;
  iw.granularity = granularity;
  iw.scale = DivideBy127(amax);
  torch::Tensor safe = torch::where(iw.scale > 0, iw.scale, torch::ones_like(iw.scale));
  iw.q = torch::clamp(torch::round(wf / safe), -127, 127).to(CodeDType(8));
  return iw;
}

// bitsandbytes' row-wise int8 (int8_vectorwise_quant): q = round(m * (127 / amax)) with amax [rows, 1]
// the absmax of each row (of whichever entries the caller counts), as float32 integers. The scale
// multiplies by 127 / amax as bitsandbytes does, rather than dividing by amax / 127, which can round a
// value at a .5 boundary the other way. |m| <= amax keeps q within [-127, 127]; the clamp only
// guards that. A zero amax (an all-zero row) gives zeros rather than bitsandbytes' 0 * inf.
torch::Tensor RowWiseInt8(const torch::Tensor& m, const torch::Tensor& amax) {
  torch::Tensor inv = torch::full({}, 127.0, amax.options()) / amax;
  inv = torch::where(amax > 0, inv, torch::zeros_like(inv));
  return torch::clamp(torch::round(m * inv), -127, 127);
}

// qx [n, in] @ qw [out, in]^T for integer-valued float32 matrices with |entries| <= 127, exactly.
// Each chunk of 1024 columns is a float32 matmul whose every partial sum is an integer of magnitude at
// most 1024 * 127^2 = 16,516,096 < 2^24, so it is exact in any summation order, with FMA, and with
// TF32 or bf16 inputs (integers up to 256 are exact in both); the chunks are added in float64, exact
// up to 2^53. This keeps the fast float32 GEMMs on CPU and CUDA without an int8 kernel.
torch::Tensor ExactIntegerMatmul(const torch::Tensor& qx, const torch::Tensor& qw) {
  constexpr int64_t kChunk = 1024;
  const int64_t in = qx.size(1);
  torch::Tensor acc = torch::zeros({qx.size(0), qw.size(0)}, qx.options().dtype(torch::kFloat64));
  for (int64_t c0 = 0; c0 < in; c0 += kChunk) {
    int64_t c1 = std::min(in, c0 + kChunk);
    acc += torch::matmul(qx.slice(1, c0, c1), qw.slice(1, c0, c1).t()).to(torch::kFloat64);
  }
  return acc;  // [n, out]
}

}  // namespace

torch::Tensor MagnitudePrune(const torch::Tensor& w, double fraction) {
  torch::Tensor out = Float32Copy(w);
  int64_t k = PruneCount(fraction, out.numel());
  if (k == 0) return out;
  torch::Tensor flat = out.view({-1});  // [numel]
  // A stable ascending sort keeps equal magnitudes in flat-index order: ties go to the lower index.
  torch::Tensor order = std::get<1>(flat.abs().sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  flat.index_fill_(0, order.slice(0, 0, k), 0.0);
  return out;
}

torch::Tensor RandomPrune(const torch::Tensor& w, double fraction, uint64_t seed) {
  torch::Tensor out = Float32Copy(w);
  int64_t k = PruneCount(fraction, out.numel());
  if (k == 0) return out;
  // The permutation is drawn on the CPU whatever w's device, so one seed prunes one set everywhere.
  at::Generator gen = at::detail::createCPUGenerator(seed);
  torch::Tensor perm = torch::randperm(out.numel(), gen, torch::TensorOptions().dtype(torch::kLong));
  out.view({-1}).index_fill_(0, perm.slice(0, 0, k).to(out.device()), 0.0);
  return out;
}

IntegerWeight AbsMaxInt8Codes(const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 2, "AbsMaxInt8Codes: w ", w.sizes(), " is not a matrix");
  torch::Tensor wf = w.to(torch::kFloat32);
  torch::Tensor amax = w.numel() == 0 ? torch::zeros({1}, wf.options()) : wf.abs().amax().reshape({1});
  return AbsMaxCodes(wf, amax, QuantGranularity::kTensor);
}

IntegerWeight AbsMaxInt8RowsCodes(const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 2, "AbsMaxInt8RowsCodes: w ", w.sizes(), " is not a matrix");
  torch::Tensor wf = w.to(torch::kFloat32);
  torch::Tensor amax = w.size(1) == 0 ? torch::zeros({w.size(0), 1}, wf.options())
                                      : wf.abs().amax(1, /*keepdim=*/true);  // [out, 1]
  return AbsMaxCodes(wf, amax, QuantGranularity::kChannel);
}

torch::Tensor AbsMaxInt8(const torch::Tensor& w) {
  if (w.numel() == 0) return Float32Copy(w);
  if (w.dim() == 2) return AbsMaxInt8Codes(w).Dequantize();
  return AbsMaxInt8Codes(w.reshape({1, -1})).Dequantize().reshape(w.sizes());
}

torch::Tensor AbsMaxInt8Rows(const torch::Tensor& w) {
  if (w.numel() == 0) return Float32Copy(w);
  const int64_t rows = w.dim() == 0 ? 1 : w.size(0);
  return AbsMaxInt8RowsCodes(w.reshape({rows, -1})).Dequantize().reshape(w.sizes());
}

LlmInt8Weight QuantizeLlmInt8Weight(const torch::Tensor& w) {
  TORCH_CHECK(w.dim() == 2, "QuantizeLlmInt8Weight: w ", w.sizes(), " is not a matrix");
  torch::Tensor wf = w.to(torch::kFloat32);
  torch::Tensor amax = wf.abs().amax(1, /*keepdim=*/true);  // [out, 1], over the whole row
  return {RowWiseInt8(wf, amax).to(torch::kInt8), amax.squeeze(1)};
}

torch::Tensor LlmInt8Matmul(const torch::Tensor& x, const torch::Tensor& w, double threshold) {
  return LlmInt8Matmul(x, QuantizeLlmInt8Weight(w), threshold);
}

torch::Tensor LlmInt8Matmul(const torch::Tensor& x, const LlmInt8Weight& w, double threshold,
                            torch::Tensor* outlier_columns) {
  TORCH_CHECK(w.cb.dim() == 2 && x.dim() >= 1 && x.size(-1) == w.cb.size(1), "LlmInt8Matmul: x ", x.sizes(),
              " and w ", w.cb.sizes(), " do not fit y = x w^T");
  const int64_t in = w.cb.size(1);
  std::vector<int64_t> out_shape(x.sizes().begin(), x.sizes().end());
  out_shape.back() = w.cb.size(0);
  torch::Tensor xf = x.to(torch::kFloat32).reshape({-1, in});  // [n, in]
  torch::Tensor cb = w.cb.to(torch::kFloat32);                 // [out, in], integers
  torch::Tensor scb = w.scb.to(torch::kFloat32).unsqueeze(1);  // [out, 1]

  torch::Tensor outlier_value = xf.abs() >= threshold;  // [n, in]
  torch::Tensor outlier = outlier_value.any(0);         // [in] bool
  if (outlier_columns != nullptr) *outlier_columns = outlier;
  if (in == 0) return torch::zeros(out_shape, xf.options());

  // Outlier part. Masking (rather than gathering the outlier columns) keeps shapes static and needs no
  // host sync; masked_fill rather than multiplying by a 0/1 mask, so an inf in one part cannot make NaN
  // in the other. The dequantized weight passes through x's dtype as bitsandbytes' subB does.
  torch::Tensor w_deq = (cb * DivideBy127(scb)).to(x.scalar_type()).to(torch::kFloat32);  // [out, in]
  torch::Tensor y_fp = torch::matmul(xf.masked_fill(outlier.logical_not(), 0.0), w_deq.t());  // [n, out]

  // Regular part: the row absmax leaves out the outlier values only; whole outlier columns are zeroed
  // after quantizing (bitsandbytes: `A[outliers] = 0`, absmax, quantize, `out_row[:, outlier_cols] = 0`).
  torch::Tensor x_in = xf.masked_fill(outlier_value, 0.0);
  torch::Tensor sx = x_in.abs().amax(1, /*keepdim=*/true);                     // [n, 1]
  torch::Tensor qx = RowWiseInt8(x_in, sx).masked_fill(outlier, 0.0);          // [n, in]
  torch::Tensor y_int = ExactIntegerMatmul(qx, cb);                            // [n, out] float64
  // Dequantize in float64 (sx * scb is exact there), then round once; a tensor divisor, as in DivideBy127.
  torch::Tensor scale = sx.to(torch::kFloat64) * scb.to(torch::kFloat64).t() /
                        torch::full({}, 127.0 * 127.0, y_int.options());
  torch::Tensor y_q = (y_int * scale).to(torch::kFloat32);
  return (y_fp + y_q).reshape(out_shape);
}

}  // namespace dtm
