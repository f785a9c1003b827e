#include "worker/engine/integer_weight.h"

namespace dtm {

std::string_view QuantGranularityName(QuantGranularity granularity) {
  switch (granularity) {
    case QuantGranularity::kTensor: return "tensor";
    case QuantGranularity::kChannel: return "channel";
    case QuantGranularity::kGroup: return "group";
  }
  return "?";
}

torch::Tensor IntegerWeight::Dequantize() const {
  // In the scale's dtype, as compressed-tensors' _dequantize: subtract, then multiply. For float32
  // scales (every dtm method's) q - zero is an exact small integer, so the product is the one
  // rounding per entry, the same as GPTQ's scale * (q - zero) and AbsMax's q * scale.
  const torch::ScalarType dtype = scale.scalar_type();
  torch::Tensor centred = q.to(dtype);
  torch::Tensor s = scale;
  torch::Tensor z = zero.defined() ? zero.to(dtype) : torch::Tensor();
  if (granularity == QuantGranularity::kGroup) {
    // [out, groups] -> [out, in]: each group's value repeated over its columns (a partial last group
    // is cut to the columns there are).
    const int64_t in = q.size(1);
    s = s.repeat_interleave(group_size, /*dim=*/1).slice(1, 0, in);
    if (z.defined()) z = z.repeat_interleave(group_size, /*dim=*/1).slice(1, 0, in);
  }
  if (z.defined()) centred = centred - z;
  return centred * s;
}

}  // namespace dtm
