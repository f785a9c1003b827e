// A linear weight stored as integers with scales (and zero points): what a quantizing method computes
// before it dequantizes, and what a quantized checkpoint stores (worker/engine/compressed_tensors.h).
//
// The convention is compressed-tensors' (its forward.py `_dequantize`): signed codes, a zero point in
// the same signed range, and w = (q - zero) * scale computed in the scale's dtype, the scale
// broadcast over the whole tensor, each row, or each group of `group_size` consecutive columns of a
// row. AbsMax int8 and GPTQ both produce their float weights through Dequantize(), so an export of
// the codes dequantizes to exactly the weights `eval` computes with.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string_view>

namespace dtm {

enum class QuantGranularity { kTensor, kChannel, kGroup };

// "tensor", "channel", "group": compressed-tensors' strategy names.
std::string_view QuantGranularityName(QuantGranularity granularity);

struct IntegerWeight {
  int bits = 8;
  bool symmetric = true;  // no zero point (it is 0)
  QuantGranularity granularity = QuantGranularity::kTensor;
  int64_t group_size = 0;  // kGroup only; the last group is partial when it does not divide `in`
  torch::Tensor q;         // [out, in] in [-2^(bits-1), 2^(bits-1) - 1]: int8 (bits <= 8) or int32
  // float32 for dtm's methods (a checkpoint read may hold another float dtype): [1] (tensor),
  // [out, 1] (channel), [out, ceil(in / group_size)] (group)
  torch::Tensor scale;
  torch::Tensor zero;      // q's dtype, the shape of scale; undefined when symmetric

  // [out, in] in the scale's dtype, on q's device: (q - zero) * scale.
  torch::Tensor Dequantize() const;
};

// The dtype codes of `bits` bits are kept in: int8 up to 8 bits, int32 above.
inline torch::ScalarType CodeDType(int bits) { return bits <= 8 ? torch::kInt8 : torch::kInt32; }

}  // namespace dtm
