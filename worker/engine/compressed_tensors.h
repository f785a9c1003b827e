// The compressed-tensors checkpoint format for weight-only integer quantization of Linear layers:
// what `dtmctl apply --format compressed-tensors` writes and what Checkpoint dequantizes on load.
//
// Followed from compressed-tensors 0.12.2 (neuralmagic/compressed-tensors, source at 52792be0,
// 2025-10-30): compressors/quantized_compressors/{naive,pack}_quantized.py for the stored tensors,
// quantization/lifecycle/forward.py `_dequantize` for the arithmetic, utils/match.py for targets, and
// QuantizationConfig / ModelCompressor for config.json's `quantization_config`:
//   naive-quantized (also read: int-quantized): <module>.weight (int8), <module>.weight_scale, and
//     <module>.weight_zero_point (int8, the scale's shape) when asymmetric;
//   pack-quantized: <module>.weight_packed (int32 [out, ceil(in / (32 / bits))], 32 / bits signed
//     codes per word, offset by 2^(bits-1), the j-th at bit j * bits), <module>.weight_shape
//     ([out, in]), <module>.weight_scale, and, when asymmetric, <module>.weight_zero_point packed
//     the same way along dim 0 ([ceil(out / (32 / bits)), groups]);
//   scale (and zero point) shapes: [1] per tensor, [out, 1] per channel, [out, in / group_size] per
//   group; w = (q - zero) * scale in the scale's dtype.
// A module is quantized by the config group one of whose targets matches its name (the name itself,
// `re:PATTERN` matched at the start of the name (module_pattern.h), or the class `Linear`) unless
// `ignore` matches it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/status.h"
#include "worker/engine/integer_weight.h"
#include "worker/engine/safetensors.h"

namespace dtm {

inline constexpr char kCompressedTensorsVersion[] = "0.12.2";

enum class CtFormat { kNaiveQuantized, kPackQuantized };
std::string_view CtFormatName(CtFormat format);  // "naive-quantized", "pack-quantized"

// The weight quantization of one config group.
struct CtWeightScheme {
  CtFormat format = CtFormat::kNaiveQuantized;
  int bits = 8;
  bool symmetric = true;
  QuantGranularity granularity = QuantGranularity::kTensor;
  int64_t group_size = 0;  // kGroup only

  bool operator<(const CtWeightScheme& o) const;
  bool operator==(const CtWeightScheme& o) const { return !(*this < o) && !(o < *this); }
  std::string ToString() const;  // e.g. "pack-quantized int4 asymmetric group 64"
};

// Packs signed codes (int8, in [-2^(bits-1), 2^(bits-1) - 1]) into int32 words along dim 1
// (packed_dim 1) or dim 0 (packed_dim 0), padding the end with zero codes (pack_to_int32).
torch::Tensor PackToInt32(const torch::Tensor& codes, int bits, int packed_dim);
// The inverse for a [rows, cols] result (int32 signed codes), padding dropped (unpack_from_int32).
torch::Tensor UnpackFromInt32(const torch::Tensor& packed, int bits, int64_t rows, int64_t cols, int packed_dim);

// ---------------------------------------------------------------------------------------------
// Writing

// The scheme dtm stores `codes` with, chosen as compressed-tensors chooses a weight-only format
// (config/format.py): pack-quantized for 4 and 8 bits (int8-absmax, int8-absmax-row: W8A16;
// gptq:4, gptq:8), naive-quantized (an int8 tensor of codes) for other widths (gptq:2, gptq:3).
CtWeightScheme ExportScheme(const IntegerWeight& codes);

// Whether the format can hold `module`'s codes of `columns` input columns: a group must divide the
// columns (the format has no partial group). INVALID_ARGUMENT naming the module otherwise.
Status CheckExportable(const std::string& module, QuantGranularity granularity, int64_t group_size, int64_t columns);

// The stored tensors of `module` (e.g. "model.layers.0.mlp.up_proj") holding `codes` (1 to 8 bits;
// more is a programming error, c10::Error), CPU, in the format's order.
std::vector<std::pair<std::string, torch::Tensor>> CompressedTensorsOf(const std::string& module,
                                                                       const IntegerWeight& codes);

// config.json's "quantization_config": one config group per distinct scheme, whose targets are
// exactly `groups`' module names (in the given order), and `ignore` (the other Linear modules).
nlohmann::json QuantizationConfigJson(const std::vector<std::pair<CtWeightScheme, std::vector<std::string>>>& groups,
                                      const std::vector<std::string>& ignore);

// ---------------------------------------------------------------------------------------------
// Reading

// How the reader reaches a checkpoint's stored tensors.
struct StoredTensors {
  std::function<const SafetensorsTensorInfo*(const std::string&)> find;  // nullptr if absent
  std::function<StatusOr<torch::Tensor>(const std::string&)> load;        // as stored, on the CPU
};

// A checkpoint's quantization_config resolved against its Linear modules. Immutable, thread-safe.
class CompressedTensorsLayout {
 public:
  // `config`: config.json's quantization_config (quant_method "compressed-tensors"); `linear_modules`:
  // every Linear module of the model; `where` names config.json in messages. UNIMPLEMENTED for what
  // dtm cannot evaluate as dequantized weights (activation or KV-cache quantization, sparsity,
  // transforms, float or non-integer weights, activation ordering, a status other than compressed);
  // INVALID_ARGUMENT for a malformed config.
  static StatusOr<std::unique_ptr<CompressedTensorsLayout>> Parse(const nlohmann::json& config,
                                                                  const std::vector<std::string>& linear_modules,
                                                                  const std::string& where);

  // The scheme of a quantized module; nullptr for any other name.
  const CtWeightScheme* SchemeOf(const std::string& module) const;
  // Whether `tensor` is one of a quantized module's stored tensors (weight, weight_packed, ...).
  bool OwnsTensor(const std::string& tensor) const;
  const std::map<std::string, CtWeightScheme>& modules() const { return modules_; }

  // Checks `module`'s stored tensors (presence, dtypes, shapes, weight_shape's values) against
  // its dense shape [out, in] without reading more than weight_shape.
  Status Check(const std::string& module, int64_t out, int64_t in, const StoredTensors& stored) const;
  // The dense weight, float in the scale's dtype, on the CPU.
  StatusOr<torch::Tensor> Dequantize(const std::string& module, int64_t out, int64_t in,
                                     const StoredTensors& stored) const;

 private:
  std::map<std::string, CtWeightScheme> modules_;  // quantized module -> scheme
};

}  // namespace dtm
