#include "worker/engine/compressed_tensors.h"

#include <algorithm>
#include <optional>
#include <sstream>
#include <tuple>

#include "worker/engine/module_pattern.h"
#include "worker/engine/tensor_util.h"

namespace dtm {
namespace {

// Codes per int32 word.
int64_t PackFactor(int bits) { return 32 / bits; }
int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The scale (and zero point) shape of a scheme for a dense [out, in] weight.
std::vector<int64_t> ScaleShape(const CtWeightScheme& scheme, int64_t out, int64_t in) {
  switch (scheme.granularity) {
    case QuantGranularity::kTensor: return {1};
    case QuantGranularity::kChannel: return {out, 1};
    case QuantGranularity::kGroup: return {out, in / scheme.group_size};
  }
  return {};
}

bool IsFloat(SafetensorsDType d) {
  return d == SafetensorsDType::kF32 || d == SafetensorsDType::kF16 || d == SafetensorsDType::kBF16 ||
         d == SafetensorsDType::kF64;
}
bool IsInteger(SafetensorsDType d) {
  return d == SafetensorsDType::kI8 || d == SafetensorsDType::kI16 || d == SafetensorsDType::kI32 ||
         d == SafetensorsDType::kI64;
}

// Whether the format stores a zero point for this scheme (the compressors' _skip_zp): only when
// asymmetric.
bool StoresZeroPoint(const CtWeightScheme& scheme) { return !scheme.symmetric; }

// -- config parsing ----------------------------------------------------------------------------

// A key that must be absent, null, false or empty for dtm to read the checkpoint as weights alone.
bool IsUnset(const nlohmann::json& v) {
  return v.is_null() || (v.is_boolean() && !v.get<bool>()) || (v.is_object() && v.empty()) ||
         (v.is_array() && v.empty());
}

// compressed-tensors' _match_name plus the class `Linear` (every module here is Linear).
class TargetMatcher {
 public:
  static StatusOr<TargetMatcher> Make(const std::string& target, const std::vector<std::string>& modules,
                                      const std::string& where) {
    TargetMatcher m;
    m.target_ = target;
    if (target == "Linear") {
      m.kind_ = kAny;
    } else if (target.rfind("re:", 0) == 0) {
      m.kind_ = kPattern;
      StatusOr<ModulePattern> pattern = ModulePattern::Compile(target.substr(3));
      if (!pattern.ok()) return Status(pattern.status().code(), where + ": target " + pattern.status().message());
      m.pattern_ = std::move(*pattern);
    } else {
      m.kind_ = kName;
      bool known = false;
      for (const std::string& module : modules) known = known || module == target;
      // A module that is not Linear (an embedding, a norm) or a class other than Linear would
      // quantize something dtm computes in float.
      if (!known) {
        return UnimplementedError(where + ": target '" + target +
                                  "' is neither a Linear module of this model, a 're:' pattern, nor the class Linear");
      }
    }
    return m;
  }
  bool Matches(const std::string& module) const {
    switch (kind_) {
      case kAny: return true;
      case kName: return module == target_;
      case kPattern: return pattern_->Matches(module);
    }
    return false;
  }

 private:
  enum Kind { kAny, kName, kPattern };
  Kind kind_ = kName;
  std::string target_;
  std::optional<ModulePattern> pattern_;
};

StatusOr<std::vector<TargetMatcher>> Matchers(const nlohmann::json& list, const std::vector<std::string>& modules,
                                              const std::string& where) {
  std::vector<TargetMatcher> out;
  if (list.is_null()) return out;
  if (!list.is_array()) return InvalidArgumentError(where + " is not a list");
  for (const auto& t : list) {
    if (!t.is_string()) return InvalidArgumentError(where + " holds " + t.dump() + ", not a string");
    ASSIGN_OR_RETURN(TargetMatcher m, TargetMatcher::Make(t.get<std::string>(), modules, where));
    out.push_back(std::move(m));
  }
  return out;
}

StatusOr<CtFormat> ParseFormat(const nlohmann::json& v, const std::string& where) {
  if (v.is_string()) {
    const std::string f = v.get<std::string>();
    if (f == "naive-quantized" || f == "int-quantized") return CtFormat::kNaiveQuantized;
    if (f == "pack-quantized") return CtFormat::kPackQuantized;
    return UnimplementedError(where + ": format '" + f +
                              "' is not read by dtm (naive-quantized, int-quantized and pack-quantized are)");
  }
  return InvalidArgumentError(where + ": format is " + v.dump() + ", not a string");
}

StatusOr<CtWeightScheme> ParseWeights(const nlohmann::json& w, CtFormat format, const std::string& where) {
  if (!w.is_object()) return InvalidArgumentError(where + ".weights is not an object");
  auto get = [&](const char* key) { return w.contains(key) ? w.at(key) : nlohmann::json(); };
  CtWeightScheme s;
  s.format = format;
  const nlohmann::json type = get("type");
  if (!type.is_null() && type != "int") {
    return UnimplementedError(where + ".weights.type is " + type.dump() + "; dtm reads integer weights only");
  }
  const nlohmann::json bits = get("num_bits");
  if (!bits.is_number_integer() || bits.get<int64_t>() < 1 || bits.get<int64_t>() > 8) {
    return InvalidArgumentError(where + ".weights.num_bits is " + bits.dump() + ", not an integer in [1, 8]");
  }
  s.bits = bits.get<int>();
  const nlohmann::json sym = get("symmetric");
  if (!sym.is_null() && !sym.is_boolean()) return InvalidArgumentError(where + ".weights.symmetric is not a boolean");
  s.symmetric = sym.is_null() ? true : sym.get<bool>();
  const std::string strategy = get("strategy").is_string() ? get("strategy").get<std::string>() : "";
  if (strategy == "tensor") {
    s.granularity = QuantGranularity::kTensor;
  } else if (strategy == "channel") {
    s.granularity = QuantGranularity::kChannel;
  } else if (strategy == "group") {
    s.granularity = QuantGranularity::kGroup;
    const nlohmann::json g = get("group_size");
    if (!g.is_number_integer() || g.get<int64_t>() < 1) {
      return InvalidArgumentError(where + ".weights.group_size is " + g.dump() + " for strategy group");
    }
    s.group_size = g.get<int64_t>();
  } else {
    return UnimplementedError(where + ".weights.strategy is " + get("strategy").dump() +
                              "; dtm reads tensor, channel and group");
  }
  if (!IsUnset(get("dynamic"))) return UnimplementedError(where + ".weights.dynamic is set; weights must be static");
  if (!IsUnset(get("actorder"))) {
    return UnimplementedError(where + ".weights.actorder is " + get("actorder").dump() +
                              "; dtm does not read activation-ordered groups (weight_g_idx)");
  }
  if (!IsUnset(get("block_structure"))) return UnimplementedError(where + ".weights.block_structure is set");
  return s;
}

}  // namespace

std::string_view CtFormatName(CtFormat format) {
  return format == CtFormat::kNaiveQuantized ? "naive-quantized" : "pack-quantized";
}

bool CtWeightScheme::operator<(const CtWeightScheme& o) const {
  return std::tie(format, bits, symmetric, granularity, group_size) <
         std::tie(o.format, o.bits, o.symmetric, o.granularity, o.group_size);
}

std::string CtWeightScheme::ToString() const {
  std::ostringstream s;
  s << CtFormatName(format) << " int" << bits << (symmetric ? " symmetric " : " asymmetric ")
    << QuantGranularityName(granularity);
  if (granularity == QuantGranularity::kGroup) s << " " << group_size;
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Packing

torch::Tensor PackToInt32(const torch::Tensor& codes, int bits, int packed_dim) {
  TORCH_CHECK(bits >= 1 && bits <= 8 && codes.dim() == 2, "PackToInt32: bits ", bits, ", codes ", codes.sizes());
  const int64_t factor = PackFactor(bits);
  // Unsigned codes in int64, so that the top word's bits cannot overflow a signed shift.
  torch::Tensor u = (codes.to(torch::kInt64) + (int64_t{1} << (bits - 1))).bitwise_and((int64_t{1} << bits) - 1);
  if (packed_dim == 0) u = u.t();
  const int64_t rows = u.size(0), cols = u.size(1);
  const int64_t words = CeilDiv(cols, factor);
  u = torch::constant_pad_nd(u, {0, words * factor - cols}, 0).contiguous().view({rows, words, factor});
  torch::Tensor shifts = torch::arange(factor, u.options()) * bits;
  torch::Tensor packed = u.bitwise_left_shift(shifts).sum(2);  // [rows, words], in [0, 2^32)
  // The same 32 bits as a signed int32 (two's complement), as torch's int32 sum leaves them.
  packed = torch::where(packed >= (int64_t{1} << 31), packed - (int64_t{1} << 32), packed).to(torch::kInt32);
  return packed_dim == 0 ? packed.t().contiguous() : packed;
}

torch::Tensor UnpackFromInt32(const torch::Tensor& packed, int bits, int64_t rows, int64_t cols, int packed_dim) {
  TORCH_CHECK(bits >= 1 && bits <= 8 && packed.dim() == 2, "UnpackFromInt32: bits ", bits, ", packed ",
              packed.sizes());
  const int64_t factor = PackFactor(bits);
  // In int32: an arithmetic shift copies the sign bit into the top, and the mask removes it again.
  torch::Tensor words = packed.to(torch::kInt32);
  if (packed_dim == 0) words = words.t();
  torch::Tensor shifts = torch::arange(factor, words.options()) * bits;
  // [r, words, factor] -> [r, words * factor]: code j of word k is column k * factor + j.
  torch::Tensor u = words.unsqueeze(2).bitwise_right_shift(shifts).bitwise_and((1 << bits) - 1);
  u = u.reshape({words.size(0), -1});
  const int64_t want = packed_dim == 0 ? rows : cols;
  u = u.slice(1, 0, want) - (1 << (bits - 1));
  if (packed_dim == 0) u = u.t();
  return u.contiguous();
}

// ---------------------------------------------------------------------------------------------
// Writing

CtWeightScheme ExportScheme(const IntegerWeight& codes) {
  CtWeightScheme s;
  s.format = codes.bits == 4 || codes.bits == 8 ? CtFormat::kPackQuantized : CtFormat::kNaiveQuantized;
  s.bits = codes.bits;
  s.symmetric = codes.symmetric;
  s.granularity = codes.granularity;
  s.group_size = codes.granularity == QuantGranularity::kGroup ? codes.group_size : 0;
  return s;
}

Status CheckExportable(const std::string& module, QuantGranularity granularity, int64_t group_size,
                       int64_t columns) {
  if (granularity != QuantGranularity::kGroup) return OkStatus();
  if (group_size < 1 || columns % group_size != 0) {
    return InvalidArgumentError(module + ": groups of " + std::to_string(group_size) + " columns do not divide its " +
                                std::to_string(columns) + " input columns, and compressed-tensors has no partial "
                                "group; choose a group size that divides " + std::to_string(columns));
  }
  return OkStatus();
}

std::vector<std::pair<std::string, torch::Tensor>> CompressedTensorsOf(const std::string& module,
                                                                       const IntegerWeight& codes) {
  // The format stores codes in int8 (naive) or packs up to 8 bits; dtm's methods have at most 8.
  TORCH_CHECK(codes.bits >= 1 && codes.bits <= 8, "CompressedTensorsOf: ", codes.bits, "-bit codes of ", module);
  const CtWeightScheme scheme = ExportScheme(codes);
  std::vector<std::pair<std::string, torch::Tensor>> out;
  torch::Tensor q = codes.q.cpu().to(torch::kInt8);
  torch::Tensor scale = codes.scale.cpu().contiguous();
  if (scheme.format == CtFormat::kNaiveQuantized) {
    out.emplace_back(module + ".weight", q.contiguous());
  } else {
    out.emplace_back(module + ".weight_packed", PackToInt32(q, codes.bits, 1));
    out.emplace_back(module + ".weight_shape", torch::tensor({q.size(0), q.size(1)}, torch::kInt64));
  }
  out.emplace_back(module + ".weight_scale", scale);
  if (StoresZeroPoint(scheme)) {
    torch::Tensor zero = codes.zero.cpu().to(torch::kInt8);
    out.emplace_back(module + ".weight_zero_point",
                     scheme.format == CtFormat::kPackQuantized ? PackToInt32(zero, codes.bits, 0) : zero.contiguous());
  }
  return out;
}

nlohmann::json QuantizationConfigJson(const std::vector<std::pair<CtWeightScheme, std::vector<std::string>>>& groups,
                                      const std::vector<std::string>& ignore) {
  nlohmann::json config_groups = nlohmann::json::object();
  std::vector<std::string> formats;
  for (size_t i = 0; i < groups.size(); ++i) {
    const auto& [scheme, targets] = groups[i];
    const std::string format(CtFormatName(scheme.format));
    if (std::find(formats.begin(), formats.end(), format) == formats.end()) formats.push_back(format);
    nlohmann::json weights = {
        {"num_bits", scheme.bits},
        {"type", "int"},
        {"symmetric", scheme.symmetric},
        {"group_size", scheme.granularity == QuantGranularity::kGroup ? nlohmann::json(scheme.group_size)
                                                                      : nlohmann::json(nullptr)},
        {"strategy", std::string(QuantGranularityName(scheme.granularity))},
        {"block_structure", nullptr},
        {"dynamic", false},
        {"actorder", nullptr},
        {"observer", "minmax"},
        {"observer_kwargs", nlohmann::json::object()},
    };
    config_groups["group_" + std::to_string(i)] = {{"targets", targets},
                                                   {"weights", weights},
                                                   {"input_activations", nullptr},
                                                   {"output_activations", nullptr},
                                                   {"format", format}};
  }
  // One format for the whole model when there is one; "mixed-precision" defers to each group's.
  const std::string format = formats.size() == 1 ? formats[0] : formats.empty() ? "dense" : "mixed-precision";
  return {{"config_groups", config_groups},
          {"format", format},
          {"global_compression_ratio", nullptr},
          {"ignore", ignore},
          {"kv_cache_scheme", nullptr},
          {"quant_method", "compressed-tensors"},
          {"quantization_status", "compressed"},
          {"sparsity_config", nlohmann::json::object()},
          {"transform_config", nlohmann::json::object()},
          {"version", kCompressedTensorsVersion}};
}

// ---------------------------------------------------------------------------------------------
// Reading

StatusOr<std::unique_ptr<CompressedTensorsLayout>> CompressedTensorsLayout::Parse(
    const nlohmann::json& config, const std::vector<std::string>& linear_modules, const std::string& where) {
  const std::string qc = where + ": quantization_config";
  if (!config.is_object()) return InvalidArgumentError(qc + " is not an object");
  auto get = [&](const char* key) { return config.contains(key) ? config.at(key) : nlohmann::json(); };
  if (get("quant_method") != "compressed-tensors") {
    return UnimplementedError(qc + ".quant_method is " + get("quant_method").dump() +
                              "; dtm reads compressed-tensors checkpoints (and unquantized ones)");
  }
  const nlohmann::json status = get("quantization_status");
  if (!status.is_null() && status != "compressed") {
    return UnimplementedError(qc + ".quantization_status is " + status.dump() +
                              "; dtm reads checkpoints whose weights are stored compressed");
  }
  if (!IsUnset(get("kv_cache_scheme"))) {
    return UnimplementedError(qc + ".kv_cache_scheme is set; dtm computes the KV cache in float");
  }
  const nlohmann::json sparsity = get("sparsity_config");
  if (!IsUnset(sparsity) && !(sparsity.is_object() && sparsity.value("format", "") == "dense")) {
    return UnimplementedError(qc + ".sparsity_config is set; dtm does not read sparse compressed-tensors formats");
  }
  if (!IsUnset(get("transform_config"))) {
    return UnimplementedError(qc + ".transform_config is set; dtm does not apply transforms");
  }

  const nlohmann::json global_format = get("format");
  ASSIGN_OR_RETURN(std::vector<TargetMatcher> ignore, Matchers(get("ignore"), linear_modules, qc + ".ignore"));
  const nlohmann::json groups = get("config_groups");
  if (!groups.is_object() || groups.empty()) {
    return InvalidArgumentError(qc + ".config_groups is not a non-empty object");
  }

  auto layout = std::unique_ptr<CompressedTensorsLayout>(new CompressedTensorsLayout());
  std::map<std::string, std::string> group_of;  // module -> the group that took it
  for (const auto& [name, group] : groups.items()) {
    const std::string gw = qc + ".config_groups." + name;
    if (!group.is_object()) return InvalidArgumentError(gw + " is not an object (a preset name is not read)");
    for (const char* act : {"input_activations", "output_activations"}) {
      if (group.contains(act) && !group.at(act).is_null()) {
        return UnimplementedError(gw + "." + act + " is set; dtm evaluates weight-only quantization (W*A16)");
      }
    }
    const nlohmann::json format_json = group.contains("format") && !group.at("format").is_null() ? group.at("format")
                                                                                                    : global_format;
    ASSIGN_OR_RETURN(CtFormat format, ParseFormat(format_json, gw));
    ASSIGN_OR_RETURN(CtWeightScheme scheme,
                     ParseWeights(group.contains("weights") ? group.at("weights") : nlohmann::json(), format, gw));
    ASSIGN_OR_RETURN(std::vector<TargetMatcher> targets,
                     Matchers(group.contains("targets") ? group.at("targets") : nlohmann::json(), linear_modules,
                              gw + ".targets"));
    for (const std::string& module : linear_modules) {
      bool hit = false, ignored = false;
      for (const TargetMatcher& t : targets) hit = hit || t.Matches(module);
      for (const TargetMatcher& t : ignore) ignored = ignored || t.Matches(module);
      if (!hit || ignored) continue;
      auto [it, inserted] = group_of.emplace(module, name);
      if (!inserted) {
        return InvalidArgumentError(qc + ": module " + module + " is targeted by both " + it->second + " and " + name);
      }
      layout->modules_[module] = scheme;
    }
  }
  return layout;
}

const CtWeightScheme* CompressedTensorsLayout::SchemeOf(const std::string& module) const {
  auto it = modules_.find(module);
  return it == modules_.end() ? nullptr : &it->second;
}

bool CompressedTensorsLayout::OwnsTensor(const std::string& tensor) const {
  const size_t dot = tensor.rfind('.');
  if (dot == std::string::npos) return false;
  const std::string leaf = tensor.substr(dot + 1);
  if (leaf != "weight" && leaf.rfind("weight_", 0) != 0) return false;
  return modules_.count(tensor.substr(0, dot)) > 0;
}

Status CompressedTensorsLayout::Check(const std::string& module, int64_t out, int64_t in,
                                      const StoredTensors& stored) const {
  const CtWeightScheme* scheme = SchemeOf(module);
  if (scheme == nullptr) return InvalidArgumentError(module + " is not quantized");
  const std::string what = module + " (" + scheme->ToString() + ")";
  auto need = [&](const std::string& name, bool (*dtype_ok)(SafetensorsDType), const char* dtype_what,
                  const std::vector<int64_t>& shape) -> Status {
    const SafetensorsTensorInfo* info = stored.find(name);
    if (info == nullptr) return NotFoundError(what + ": the checkpoint has no tensor '" + name + "'");
    if (!dtype_ok(info->dtype)) {
      return InvalidArgumentError(what + ": tensor '" + name + "' has dtype " +
                                  std::string(SafetensorsDTypeName(info->dtype)) + ", expected " + dtype_what);
    }
    if (info->shape != shape) {
      return InvalidArgumentError(what + ": tensor '" + name + "' has shape " + ShapeString(info->shape) +
                                  ", expected " + ShapeString(shape) + " for a weight of " +
                                  ShapeString({out, in}));
    }
    return OkStatus();
  };
  if (scheme->granularity == QuantGranularity::kGroup && in % scheme->group_size != 0) {
    return InvalidArgumentError(what + ": groups of " + std::to_string(scheme->group_size) + " do not divide its " +
                                std::to_string(in) + " input columns");
  }
  const std::vector<int64_t> scale_shape = ScaleShape(*scheme, out, in);
  if (scheme->format == CtFormat::kNaiveQuantized) {
    RETURN_IF_ERROR(need(module + ".weight", [](SafetensorsDType d) { return d == SafetensorsDType::kI8; }, "I8",
                         {out, in}));
  } else {
    const int64_t factor = PackFactor(scheme->bits);
    RETURN_IF_ERROR(need(module + ".weight_packed", [](SafetensorsDType d) { return d == SafetensorsDType::kI32; },
                         "I32", {out, CeilDiv(in, factor)}));
    const std::string shape_name = module + ".weight_shape";
    RETURN_IF_ERROR(need(shape_name, IsInteger, "an integer type", {2}));
    ASSIGN_OR_RETURN(torch::Tensor shape, stored.load(shape_name));
    shape = shape.to(torch::kInt64);
    if (shape[0].item<int64_t>() != out || shape[1].item<int64_t>() != in) {
      return InvalidArgumentError(what + ": '" + shape_name + "' says [" + std::to_string(shape[0].item<int64_t>()) +
                                  ", " + std::to_string(shape[1].item<int64_t>()) + "], the model needs " +
                                  ShapeString({out, in}));
    }
  }
  RETURN_IF_ERROR(need(module + ".weight_scale", IsFloat, "a float type", scale_shape));
  if (StoresZeroPoint(*scheme)) {
    std::vector<int64_t> zp_shape = scale_shape;
    if (scheme->format == CtFormat::kPackQuantized) {
      if (scheme->granularity == QuantGranularity::kTensor) {
        return UnimplementedError(what + ": a packed per-tensor zero point is not defined by the format");
      }
      zp_shape[0] = CeilDiv(zp_shape[0], PackFactor(scheme->bits));
      RETURN_IF_ERROR(need(
          module + ".weight_zero_point", [](SafetensorsDType d) { return d == SafetensorsDType::kI32; }, "I32",
          zp_shape));
    } else {
      RETURN_IF_ERROR(need(module + ".weight_zero_point", IsInteger, "an integer type", zp_shape));
    }
  }
  if (stored.find(module + ".weight_g_idx") != nullptr) {
    return UnimplementedError(what + ": '" + module + ".weight_g_idx' (activation order) is not read by dtm");
  }
  return OkStatus();
}

StatusOr<torch::Tensor> CompressedTensorsLayout::Dequantize(const std::string& module, int64_t out, int64_t in,
                                                            const StoredTensors& stored) const {
  RETURN_IF_ERROR(Check(module, out, in, stored));
  const CtWeightScheme& scheme = *SchemeOf(module);
  IntegerWeight codes;
  codes.bits = scheme.bits;
  codes.symmetric = scheme.symmetric;
  codes.granularity = scheme.granularity;
  codes.group_size = scheme.group_size;
  if (scheme.format == CtFormat::kNaiveQuantized) {
    ASSIGN_OR_RETURN(codes.q, stored.load(module + ".weight"));
  } else {
    ASSIGN_OR_RETURN(torch::Tensor packed, stored.load(module + ".weight_packed"));
    codes.q = UnpackFromInt32(packed, scheme.bits, out, in, 1);
  }
  ASSIGN_OR_RETURN(codes.scale, stored.load(module + ".weight_scale"));
  if (StoresZeroPoint(scheme)) {
    ASSIGN_OR_RETURN(torch::Tensor zero, stored.load(module + ".weight_zero_point"));
    codes.zero = scheme.format == CtFormat::kPackQuantized
                     ? UnpackFromInt32(zero, scheme.bits, out, codes.scale.size(1), 0)
                     : zero;
  }
  return codes.Dequantize();
}

}  // namespace dtm
