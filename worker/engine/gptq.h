// GPTQ (Frantar et al. 2022): quantizes a linear weight column by column, pushing each column's
// rounding error onto the columns not yet quantized through the inverse Hessian of the layer's inputs.
//
// Follows the reference implementation (IST-DASLab/gptq, gptq.py `GPTQ.fasterquant` with quant.py's
// per-channel `Quantizer`, no act-order, no static groups):
//   1. dead inputs (diag H == 0): H[i, i] = 1 and W[:, i] = 0;
//   2. H += percdamp * mean(diag H) * I;  Hinv = upper Cholesky factor of H^-1;
//   3. quantizer (per output row, min-max over a range that includes 0, asymmetric unless
//      `symmetric`) fitted once on W, or at every group start on that group's columns;
//   4. per block of `block_size` columns, per column i: q = quantize(w_i), err = (w_i - q) / Hinv[i, i],
//      later columns of the block -= err Hinv[i, i:]; after the block, the columns right of it
//      -= Err_block Hinv[block, right].
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "common/status.h"
#include "worker/engine/integer_weight.h"

namespace dtm {

struct GptqOptions {
  int bits = 4;            // 1..16; the configs use 2, 3, 4, 8
  int group_size = 0;      // 0: one quantizer per row over all columns
  double percdamp = 0.01;  // dampening, a fraction of the mean diagonal of H
  int block_size = 128;    // columns per lazy-update block
  bool symmetric = false;  // quant.py's sym=True: zero point fixed at (maxq + 1) / 2
};

// w: [out, in] (any float dtype); hessian: [in, in], as HessianAccumulator makes it (any float dtype;
// moved to w's device). Returns the dequantized quantized weight, float32 [out, in] on w's device.
// Errors: shapes that do not fit, options out of range, an H that is not positive definite after
// dampening.
StatusOr<torch::Tensor> GptqQuantize(const torch::Tensor& w, const torch::Tensor& hessian,
                                     const GptqOptions& opts);

// The same, with the integer codes it dequantizes from: codes.Dequantize() equals `dequantized`
// bit for bit. The reference's unsigned q in [0, 2^bits - 1] and zero point become signed by
// subtracting 2^(bits-1) from both (compressed-tensors' convention; q - zero is unchanged). One
// scale and zero point per row (kChannel, group_size 0) or per group of columns (kGroup; the last
// group is partial when group_size does not divide the columns); symmetric: no zero point.
struct GptqResult {
  torch::Tensor dequantized;  // float32 [out, in]
  IntegerWeight codes;
};
StatusOr<GptqResult> GptqQuantizeWithCodes(const torch::Tensor& w, const torch::Tensor& hessian,
                                           const GptqOptions& opts);

// Accumulates the Hessian H = 2/n sum_rows x x^T of a layer's inputs over batches, as a running mean
// (the reference's add_batch) so that it stays well scaled however many batches come. Unlike the
// reference, n counts rows (tokens), not sequences: the result is a true mean, and GPTQ's output does
// not depend on H's scale. Not thread-safe.
class HessianAccumulator {
 public:
  // H is float32 [in_features, in_features] on `device`, as in the reference.
  explicit HessianAccumulator(int64_t in_features, torch::Device device);

  // x: [..., in_features], any float dtype and device. x.size(-1) != in_features is a programming
  // error (c10::Error).
  void Add(const torch::Tensor& x);

  // [in, in] float32, sharing storage with the accumulator (no copy of a large matrix); zeros before
  // the first Add.
  torch::Tensor hessian() const { return h_; }
  // Rows of x seen so far.
  int64_t num_samples() const { return n_; }

 private:
  torch::Tensor h_;  // [in, in] float32
  int64_t n_ = 0;
};

}  // namespace dtm
