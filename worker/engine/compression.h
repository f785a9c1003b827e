// The compression methods of SPEC's table, as pure tensor functions (GPTQ lives in gptq.h).
//
// Every function takes a weight (or activation) of any floating dtype on any device, computes in
// float32 and returns a float32 tensor of the same shape on the same device; the caller casts it back
// to the model's dtype. Rounding is torch::round: half to even, as PyTorch and bitsandbytes round.
#pragma once

#include <torch/torch.h>

#include <cstdint>

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
// q * s. An all-zero tensor stays zero.
torch::Tensor AbsMaxInt8(const torch::Tensor& w);

// The same with one scale per output row: w is [out, in] (trailing dims are flattened into `in`).
torch::Tensor AbsMaxInt8Rows(const torch::Tensor& w);

// LLM.int8() (Dettmers et al. 2022) for y = x w^T, x [..., in], w [out, in]; returns float32
// [..., out]. Columns j of x with any |x[.., j]| > threshold (over every position this call receives)
// are outliers: their part x[:, j] w[:, j]^T is a float32 product. The rest is vector-wise int8: each
// row of x and each row of w quantized with its own absmax scale over the non-outlier columns, the
// integer product computed exactly, then dequantized by the two scales. Shapes must agree
// (x.size(-1) == w.size(1)); a mismatch is a programming error and throws c10::Error.
torch::Tensor LlmInt8Matmul(const torch::Tensor& x, const torch::Tensor& w, double threshold = 6.0);

}  // namespace dtm
