#include "worker/engine/gptq.h"

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>

#include "worker/engine/engine_error.h"

namespace dtm {
namespace {

std::string ShapeOf(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// quant.py's per-channel Quantizer, fitted on x [out, cols]: scale and zero [out, 1].
struct RowQuantizer {
  torch::Tensor scale;  // [out, 1]
  torch::Tensor zero;   // [out, 1]
  double maxq = 0;
};

// find_params(x, weight=True): the range always includes 0, a row of zeros gets [-1, 1], and the
// symmetric variant mirrors the larger side (only when xmin < 0, as the reference does).
RowQuantizer FitQuantizer(const torch::Tensor& x, double maxq, bool symmetric) {
  torch::Tensor zeros = torch::zeros({x.size(0)}, x.options());
  torch::Tensor xmin = torch::minimum(std::get<0>(x.min(1)), zeros);  // [out]
  torch::Tensor xmax = torch::maximum(std::get<0>(x.max(1)), zeros);  // [out]
  if (symmetric) {
    xmax = torch::maximum(xmin.abs(), xmax);
    xmin = torch::where(xmin < 0, -xmax, xmin);
  }
  torch::Tensor both_zero = (xmin == 0) & (xmax == 0);
  xmin = xmin.masked_fill(both_zero, -1.0);
  xmax = xmax.masked_fill(both_zero, 1.0);
  // Divide by a device tensor, as the reference divides by its maxq tensor: a Scalar divisor would let
  // CUDA multiply by the reciprocal instead.
  torch::Tensor scale = (xmax - xmin) / torch::full({}, maxq, x.options());
  torch::Tensor zero = symmetric ? torch::full_like(scale, (maxq + 1) / 2) : torch::round(-xmin / scale);
  return {scale.unsqueeze(1), zero.unsqueeze(1), maxq};
}

// quant.py's quantize() in two steps: the nearest grid point's code in [0, maxq] (float), x [out, k],
// then its dequantized value.
torch::Tensor QuantizeCode(const torch::Tensor& x, const RowQuantizer& qz) {
  return torch::clamp(torch::round(x / qz.scale) + qz.zero, 0, qz.maxq);
}
torch::Tensor Dequantize(const torch::Tensor& code, const RowQuantizer& qz) { return qz.scale * (code - qz.zero); }

// Where QuantizeColumns records the integer codes, in IntegerWeight's signed convention.
class CodeRecorder {
 public:
  CodeRecorder(IntegerWeight* codes, const torch::Tensor& W, const GptqOptions& opts) : codes_(codes) {
    if (codes_ == nullptr) return;
    const int64_t columns = W.size(1);
    const int64_t groups = opts.group_size > 0 ? (columns + opts.group_size - 1) / opts.group_size : 1;
    codes_->bits = opts.bits;
    codes_->symmetric = opts.symmetric;
    codes_->granularity = opts.group_size > 0 ? QuantGranularity::kGroup : QuantGranularity::kChannel;
    codes_->group_size = opts.group_size;
    codes_->q = torch::zeros_like(W, W.options().dtype(CodeDType(opts.bits)));
    scale_ = torch::zeros({W.size(0), groups}, W.options());
    zero_ = torch::zeros({W.size(0), groups}, W.options());
    offset_ = std::ldexp(1.0, opts.bits - 1);
  }
  // The quantizer of group `group` (0 for a whole row).
  void Quantizer(int64_t group, const RowQuantizer& qz) {
    if (codes_ == nullptr) return;
    scale_.slice(1, group, group + 1).copy_(qz.scale);
    zero_.slice(1, group, group + 1).copy_(qz.zero);
  }
  void Column(int64_t col, const torch::Tensor& code) {
    if (codes_ != nullptr) codes_->q.slice(1, col, col + 1).copy_(code - offset_);
  }
  void Finish() {
    if (codes_ == nullptr) return;
    codes_->scale = scale_;
    // A symmetric quantizer's zero point is (maxq + 1) / 2 = offset: 0 once signed, so not stored.
    if (!codes_->symmetric) codes_->zero = (zero_ - offset_).to(CodeDType(codes_->bits));
  }

 private:
  IntegerWeight* codes_;
  torch::Tensor scale_;  // float32 [out, groups]
  torch::Tensor zero_;   // float32 [out, groups], unsigned as the reference's
  double offset_ = 0;
};

Status CheckArguments(const torch::Tensor& w, const torch::Tensor& hessian, const GptqOptions& opts) {
  if (w.dim() != 2 || !w.is_floating_point()) {
    return InvalidArgumentError("GPTQ: weight " + ShapeOf(w) +
                                " is not a 2-D floating-point [out, in] matrix");
  }
  if (hessian.dim() != 2 || hessian.size(0) != w.size(1) || hessian.size(1) != w.size(1)) {
    return InvalidArgumentError("GPTQ: Hessian " + ShapeOf(hessian) + " does not fit weight " + ShapeOf(w) +
                                " (expected [in, in] with in = " + std::to_string(w.size(1)) + ")");
  }
  if (!hessian.is_floating_point()) return InvalidArgumentError("GPTQ: the Hessian is not floating point");
  if (opts.bits < 1 || opts.bits > 16) {
    return InvalidArgumentError("GPTQ: bits " + std::to_string(opts.bits) + " outside [1, 16]");
  }
  if (opts.group_size < 0) {
    return InvalidArgumentError("GPTQ: group size " + std::to_string(opts.group_size) + " is negative");
  }
  if (opts.block_size < 1) {
    return InvalidArgumentError("GPTQ: block size " + std::to_string(opts.block_size) + " is not positive");
  }
  if (!(opts.percdamp >= 0 && std::isfinite(opts.percdamp))) {
    return InvalidArgumentError("GPTQ: dampening " + std::to_string(opts.percdamp) +
                                " is not a finite value >= 0");
  }
  return OkStatus();
}

// Steps 1 (H part) and 2: the upper Cholesky factor of (H + damp I)^-1, float32 [in, in]. Computed in
// float64 on every device: the Cholesky factorisations of an ill-conditioned H are where float32 loses
// most, and the cost (n^3 once per matrix) is small next to the column loop.
StatusOr<torch::Tensor> InverseHessianFactor(const torch::Tensor& hessian, const torch::Tensor& dead,
                                             double percdamp) {
  torch::Tensor h = hessian.to(torch::kFloat64, /*non_blocking=*/false, /*copy=*/true);  // [in, in]
  h.diagonal().masked_fill_(dead, 1.0);
  torch::Tensor damp = percdamp * h.diagonal().mean();
  h.diagonal().add_(damp);
  auto [lower, info] = torch::linalg_cholesky_ex(h, /*upper=*/false, /*check_errors=*/false);
  if (info.item<int64_t>() != 0) {
    return FailedPreconditionError("GPTQ: the Hessian is not positive definite after dampening by " +
                                   std::to_string(percdamp) + " of its mean diagonal (leading minor " +
                                   std::to_string(info.item<int64_t>()) + ")");
  }
  torch::Tensor hinv = torch::cholesky_inverse(lower);  // [in, in]
  auto [upper, info_inv] = torch::linalg_cholesky_ex(hinv, /*upper=*/true, /*check_errors=*/false);
  if (info_inv.item<int64_t>() != 0) {
    return FailedPreconditionError("GPTQ: the inverse Hessian is not positive definite (leading minor " +
                                   std::to_string(info_inv.item<int64_t>()) + ")");
  }
  return upper.to(torch::kFloat32);
}

// Steps 3 and 4 on W (float32 [out, in], modified) with Hinv's upper factor (float32 [in, in]).
torch::Tensor QuantizeColumns(torch::Tensor W, const torch::Tensor& hinv, RowQuantizer qz, const GptqOptions& opts,
                              CodeRecorder& recorder) {
  const int64_t columns = W.size(1);
  torch::Tensor Q = torch::zeros_like(W);  // [out, in]
  if (opts.group_size <= 0) recorder.Quantizer(0, qz);
  for (int64_t i1 = 0; i1 < columns; i1 += opts.block_size) {
    const int64_t i2 = std::min<int64_t>(i1 + opts.block_size, columns);
    torch::Tensor W1 = W.slice(1, i1, i2).clone();                 // [out, count]
    torch::Tensor Err1 = torch::zeros_like(W1);                    // [out, count]
    torch::Tensor Hinv1 = hinv.slice(0, i1, i2).slice(1, i1, i2);  // [count, count]
    for (int64_t i = 0; i < i2 - i1; ++i) {
      const int64_t col = i1 + i;
      if (opts.group_size > 0 && col % opts.group_size == 0) {
        // As the reference: the group's columns of W, which holds the updates of earlier blocks but
        // not yet those of earlier columns of this block (they are in W1).
        qz = FitQuantizer(W.slice(1, col, std::min<int64_t>(col + opts.group_size, columns)), qz.maxq,
                          opts.symmetric);
        recorder.Quantizer(col / opts.group_size, qz);
      }
      torch::Tensor w = W1.slice(1, i, i + 1);                    // [out, 1], a view into W1
      torch::Tensor code = QuantizeCode(w, qz);                   // [out, 1]
      recorder.Column(col, code);
      torch::Tensor q = Dequantize(code, qz);                     // [out, 1]
      torch::Tensor hinv_row = Hinv1.slice(0, i, i + 1);          // [1, count]
      torch::Tensor err = (w - q) / hinv_row.slice(1, i, i + 1);  // [out, 1]
      Q.slice(1, col, col + 1).copy_(q);
      Err1.slice(1, i, i + 1).copy_(err);
      // Spread this column's error over the rest of the block.
      W1.slice(1, i).sub_(err.matmul(hinv_row.slice(1, i)));  // [out, 1] @ [1, count - i]
    }
    // Lazy batch update of every column right of the block.
    if (i2 < columns) W.slice(1, i2).sub_(Err1.matmul(hinv.slice(0, i1, i2).slice(1, i2)));
  }
  recorder.Finish();
  return Q;
}

// `codes`: where to put the integer codes, or null.
StatusOr<torch::Tensor> RunGptq(const torch::Tensor& w, const torch::Tensor& hessian, const GptqOptions& opts,
                                IntegerWeight* codes) {
  torch::Tensor W = w.to(w.options().dtype(torch::kFloat32), /*non_blocking=*/false, /*copy=*/true,
                         torch::MemoryFormat::Contiguous);  // [out, in]
  CodeRecorder recorder(codes, W, opts);
  if (W.numel() == 0) {
    recorder.Finish();
    return W;
  }
  const double maxq = std::ldexp(1.0, opts.bits) - 1;
  // As the reference, the whole-row quantizer is fitted before dead columns are zeroed.
  RowQuantizer qz = FitQuantizer(W, maxq, opts.symmetric);
  torch::Tensor h = hessian.to(W.device());
  // LAPACK's Cholesky reports no error for NaN input: catch bad calibration data here.
  if (!torch::isfinite(h).all().item<bool>()) {
    return FailedPreconditionError("GPTQ: the Hessian has entries that are not finite");
  }
  torch::Tensor dead = h.diagonal() == 0;  // [in] bool
  W.masked_fill_(dead.unsqueeze(0), 0.0);
  ASSIGN_OR_RETURN(torch::Tensor hinv, InverseHessianFactor(h, dead, opts.percdamp));
  return QuantizeColumns(W, hinv, qz, opts, recorder);
}

}  // namespace

StatusOr<torch::Tensor> GptqQuantize(const torch::Tensor& w, const torch::Tensor& hessian,
                                     const GptqOptions& opts) {
  RETURN_IF_ERROR(CheckArguments(w, hessian, opts));
  try {
    return RunGptq(w, hessian, opts, nullptr);
  } catch (const std::exception& e) {
    return StatusFromException(e, "GPTQ: libtorch failed");
  }
}

StatusOr<GptqResult> GptqQuantizeWithCodes(const torch::Tensor& w, const torch::Tensor& hessian,
                                           const GptqOptions& opts) {
  RETURN_IF_ERROR(CheckArguments(w, hessian, opts));
  try {
    GptqResult result;
    ASSIGN_OR_RETURN(result.dequantized, RunGptq(w, hessian, opts, &result.codes));
    return result;
  } catch (const std::exception& e) {
    return StatusFromException(e, "GPTQ: libtorch failed");
  }
}

HessianAccumulator::HessianAccumulator(int64_t in_features, torch::Device device)
    : h_(torch::zeros({in_features, in_features},
                      torch::TensorOptions().dtype(torch::kFloat32).device(device))) {}

void HessianAccumulator::Add(const torch::Tensor& x) {
  const int64_t in = h_.size(0);
  TORCH_CHECK(x.dim() >= 1 && x.size(-1) == in, "HessianAccumulator: input ", x.sizes(), " does not end in ",
              in, " features");
  torch::Tensor rows = x.reshape({-1, in}).to(h_.device(), torch::kFloat32);  // [m, in]
  const int64_t m = rows.size(0);
  if (m == 0) return;
  // Running mean: rescale what is there to the new count, then add the new rows' share.
  h_.mul_(static_cast<double>(n_) / static_cast<double>(n_ + m));
  n_ += m;
  rows = rows * std::sqrt(2.0 / static_cast<double>(n_));
  h_.addmm_(rows.t(), rows);  // += rows^T rows
}

}  // namespace dtm
