// The compression methods of SPEC's table, as pure tensor functions (GPTQ lives in gptq.h).
//
// Every function takes a weight (or activation) of any floating dtype on any device, computes in
// float32 and returns a float32 tensor of the same shape on the same device; the caller casts it back
// to the model's dtype. Rounding is torch::round: half to even, as PyTorch and bitsandbytes round.
#pragma once

#include <torch/torch.h>

#include <cstdint>

#include "worker/engine/integer_weight.h"

namespace dtm {

// Magnitude pruning: zeros the k = llround(fraction * numel) entries of smallest |w|. Ties are broken
// by the lower flat index (a stable sort), so the result is deterministic; entries that are already 0
// count as the smallest, so pruning twice composes. `fraction` is clamped to [0, 1].
torch::Tensor MagnitudePrune(const torch::Tensor& w, double fraction);

// Random pruning (the control of the paper's Fig. 2): zeros k = llround(fraction * numel) entries
// drawn uniformly without replacement by a CPU generator seeded with `seed`, so that the mask is the
// same on every device for one libtorch version.
torch::Tensor RandomPrune(const torch::Tensor& w, double fraction, uint64_t seed);

// AbsMax int8 over the whole tensor: s = max|w| / 127, q = clamp(round(w / s), -127, 127), returns
// q * s (AbsMaxInt8Codes(w).Dequantize(), so an exported q and s give exactly these weights). An
// all-zero tensor stays zero (s = 0). A rounded zero is +0.0, never -0.0.
torch::Tensor AbsMaxInt8(const torch::Tensor& w);
// q (int8 range, symmetric) and s ([1]) of a 2-D w [out, in].
IntegerWeight AbsMaxInt8Codes(const torch::Tensor& w);

// The same with one scale per output row: w is [out, in] (trailing dims are flattened into `in`).
torch::Tensor AbsMaxInt8Rows(const torch::Tensor& w);
// q and s ([out, 1]) of a 2-D w [out, in].
IntegerWeight AbsMaxInt8RowsCodes(const torch::Tensor& w);

// LLM.int8() (Dettmers et al. 2022) as bitsandbytes computes it (MatMul8bitLt with Int8Params, the
// paper's implementation). The weight is stored once as row-wise int8 over each WHOLE row (bitsandbytes'
// CB and SCB): scb[o] = max_j |w[o, j]|, cb[o, j] = round(w[o, j] * (127 / scb[o])).
inline constexpr double kLlmInt8Threshold = 6.0;  // bitsandbytes' default llm_int8_threshold

struct LlmInt8Weight {
  torch::Tensor cb;   // [out, in] int8, on w's device
  torch::Tensor scb;  // [out] float32: each row's absmax
};

// Quantizes w [out, in] (any floating dtype); an all-zero row gets scb 0 and cb 0.
LlmInt8Weight QuantizeLlmInt8Weight(const torch::Tensor& w);

// y = x w^T for x [..., in]; returns float32 [..., out]. At each call (bitsandbytes'
// int8_vectorwise_quant + int8_mixed_scaled_mm):
//  - the outlier columns are the input features j with any |x[.., j]| >= threshold over every position
//    this call receives (bitsandbytes compares with >=, so a value of exactly 6.0 is an outlier);
//  - their part is x[:, outliers] @ (cb[:, outliers] * scb / 127)^T: the weight columns are
//    dequantized from the int8, then rounded to x's dtype (bitsandbytes' `.to(A.dtype)`), and the
//    product is taken in float32;
//  - the rest is vector-wise int8: each row i of x is quantized with sx[i] = max |x[i, j]| over the
//    entries below the threshold (the outlier VALUES are left out of the absmax, the other entries of
//    an outlier column are not), qx = round(x * (127 / sx)), then the outlier columns of qx are zeroed;
//    qx @ cb^T is computed exactly and dequantized by sx[i] * scb[o] / 127^2.
// Deviations, all below bitsandbytes' own fp16 rounding: inputs are not cast to fp16 first, the
// dequantization runs in float64 and the two parts are summed in float32 and rounded once by the caller;
// a row of x whose every entry is an outlier (or zero) quantizes to zeros instead of bitsandbytes' 0/0.
// If `outlier_columns` is given, it receives the [in] bool mask of outlier columns.
// Shapes must agree (x.size(-1) == cb.size(1)); a mismatch is a programming error and throws c10::Error.
torch::Tensor LlmInt8Matmul(const torch::Tensor& x, const LlmInt8Weight& w, double threshold = kLlmInt8Threshold,
                            torch::Tensor* outlier_columns = nullptr);

// The same, quantizing w first.
torch::Tensor LlmInt8Matmul(const torch::Tensor& x, const torch::Tensor& w, double threshold = kLlmInt8Threshold);

}  // namespace dtm
