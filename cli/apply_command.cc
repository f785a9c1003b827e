#include "cli/apply_command.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <system_error>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cli/engine_support.h"
#include "common/calibration_set.h"
#include "common/compression_config.h"
#include "common/jsonl.h"
#include "worker/engine/calibration.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/compressed_tensors.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/safetensors.h"
#include "worker/engine/tensor_util.h"

namespace dtm::cli {
namespace {

namespace fs = std::filesystem;

enum class ApplyFormat { kFloat, kCompressedTensors };

StatusOr<ApplyFormat> ParseApplyFormat(const std::string& format) {
  if (format == "float") return ApplyFormat::kFloat;
  if (format == "compressed-tensors") return ApplyFormat::kCompressedTensors;
  return InvalidArgumentError("--format '" + format + "': float or compressed-tensors");
}

Status CopyFile(const std::string& from, const std::string& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return InternalError("cannot copy " + from + " to " + to + ": " + ec.message());
  return OkStatus();
}

uintmax_t FileBytes(const std::vector<std::string>& paths) {
  uintmax_t total = 0;
  for (const std::string& path : paths) {
    std::error_code ec;
    const uintmax_t n = fs::file_size(path, ec);
    if (!ec) total += n;
  }
  return total;
}

// The refusals that need only the config and the model's shapes, before any weight loads.
Status CheckConfigCanBeWritten(const CompressionConfig& config, const LlamaConfig& llama, ApplyFormat format) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (auto& [name, shape] : ExpectedLlamaTensors(llama)) shapes[name] = shape;
  for (const auto& [id, method] : config.entries) {
    if (method.kind == MethodKind::kLlmInt8) {
      return InvalidArgumentError(id.Name() + "=llm-int8: LLM.int8() picks its outlier columns from each input at "
                                  "run time, so it cannot be written as weights; for an int8 export choose "
                                  "int8-absmax-row (per-channel W8A16) for it, or evaluate llm-int8 with "
                                  "`dtmctl eval`");
    }
    if (format == ApplyFormat::kCompressedTensors && method.kind == MethodKind::kGptq && method.group_size > 0) {
      const std::vector<int64_t>& shape = shapes.at(id.Name() + ".weight");
      RETURN_IF_ERROR(CheckExportable(id.Name() + "=" + method.ToString(), QuantGranularity::kGroup,
                                      method.group_size, shape[1]));
    }
  }
  return OkStatus();
}

// What compressed-tensors' sparse-bitmask format would store for the pruned weights, beside their
// dense bytes: the nonzero values, a bit per entry, and an int64 row offset per row (its
// bitmask_compress). Not written: a figure for deciding whether a sparse export would pay.
nlohmann::json PrunedSizes(const CompressionConfig& config, LlamaModel& model) {
  int64_t components = 0, dense = 0, bitmask = 0;
  for (const auto& [id, method] : config.entries) {
    if (method.kind != MethodKind::kPrune && method.kind != MethodKind::kRandomPrune) continue;
    const torch::Tensor& w = model.ComponentWeight(id);
    const int64_t elem = static_cast<int64_t>(w.element_size());
    const int64_t rows = w.size(0), cols = w.size(1);
    ++components;
    dense += w.numel() * elem;
    bitmask += w.count_nonzero().item<int64_t>() * elem + rows * ((cols + 7) / 8) + rows * 8;
  }
  return {{"components", components}, {"dense_bytes", dense}, {"sparse_bitmask_bytes", bitmask}};
}

// The compressed-tensors layout of the applied weights: each module with codes goes out as its
// stored tensors, the rest dense, in model order.
struct CompressedExport {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  std::vector<std::pair<CtWeightScheme, std::vector<std::string>>> groups;  // first appearance order
  std::vector<std::string> ignore;
};

CompressedExport BuildCompressedExport(const CompressionConfig& config, const LlamaModel& model,
                                       const std::map<int, IntegerWeight>& codes) {
  std::map<std::string, const IntegerWeight*> by_module;
  for (const auto& [id, method] : config.entries) {
    auto it = codes.find(id.Index());
    if (it != codes.end()) by_module[id.Name()] = &it->second;
  }
  CompressedExport out;
  for (auto& [name, tensor] : model.NamedWeights()) {
    const std::optional<std::string> module = ModuleOfWeight(name);
    auto it = module ? by_module.find(*module) : by_module.end();
    if (it == by_module.end()) {
      out.tensors.emplace_back(name, tensor);
      continue;
    }
    for (auto& stored : CompressedTensorsOf(*module, *it->second)) out.tensors.push_back(std::move(stored));
    const CtWeightScheme scheme = ExportScheme(*it->second);
    auto group = std::find_if(out.groups.begin(), out.groups.end(), [&](const auto& g) { return g.first == scheme; });
    if (group == out.groups.end()) {
      out.groups.push_back({scheme, {}});
      group = out.groups.end() - 1;
    }
    group->second.push_back(*module);
  }
  for (const std::string& module : LlamaLinearModules(model.config())) {
    if (by_module.count(module) == 0) out.ignore.push_back(module);
  }
  // transformers builds lm_head as a Linear even when it shares the embedding's weight.
  if (model.config().tie_word_embeddings) out.ignore.push_back("lm_head");
  return out;
}

}  // namespace

Status ApplyCommand(const ApplyOptions& options) {
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(const ApplyFormat format, ParseApplyFormat(options.format));
  RETURN_IF_ERROR(CheckOutDirIsFree(options.out_dir));
  ApplyThreads(options.runtime.threads);
  if (options.runtime.batch_size < 1) return InvalidArgumentError("--batch-size must be at least 1");

  ASSIGN_OR_RETURN(torch::Device device, ParseDevice(options.runtime.device));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(options.model_dir));
  // Default precision: as stored, so that an untouched tensor is written back bit for bit.
  torch::ScalarType dtype = torch::kFloat32;
  if (!options.runtime.dtype.empty()) {
    ASSIGN_OR_RETURN(dtype, ParseDType(options.runtime.dtype));
  } else if (const SafetensorsTensorInfo* info = checkpoint->Find("model.embed_tokens.weight")) {
    const torch::ScalarType stored = ToScalarType(info->dtype);
    if (stored == torch::kFloat32 || stored == torch::kFloat16 || stored == torch::kBFloat16) dtype = stored;
  }

  const int num_layers = static_cast<int>(checkpoint->config().num_hidden_layers);
  ASSIGN_OR_RETURN(CompressionConfig config, ParseCompressionConfig(options.compress, num_layers));
  RETURN_IF_ERROR(CheckConfigCanBeWritten(config, checkpoint->config(), format));
  if (ConfigNeedsCalibration(config) && options.calibration.empty()) {
    return InvalidArgumentError("--calibration FILE (a probe or baseline file) is needed for gptq");
  }
  // Checked whenever given, as eval does, and before the weights load.
  std::unique_ptr<CalibrationHessians> calibration;
  if (!options.calibration.empty()) {
    ASSIGN_OR_RETURN(CalibrationSequences set, ReadCalibrationFile(options.calibration, options.calibration_count,
                                                                   options.calibration_seq_len, checkpoint->config()));
    if (ConfigNeedsCalibration(config)) {
      calibration = std::make_unique<CalibrationHessians>(std::move(set), options.runtime.batch_size);
    }
  }

  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(*checkpoint, ModelOptions{dtype, device}));
  // The same in-place application eval uses; the evaluator restores the weights when it goes, after
  // they are written. The integer codes come from that same application.
  Evaluator evaluator(model.get(), calibration.get());
  std::map<int, IntegerWeight> codes;
  if (format == ApplyFormat::kCompressedTensors) evaluator.KeepIntegerWeights(&codes);
  RETURN_IF_ERROR(evaluator.Apply(config));

  CompressedExport exported;
  if (format == ApplyFormat::kCompressedTensors) {
    exported = BuildCompressedExport(config, *model, codes);
  } else {
    exported.tensors = model->NamedWeights();
  }
  std::set<std::string> written;
  for (const auto& [name, tensor] : model->NamedWeights()) written.insert(name);
  // Tensors the model does not use (e.g. rotary inv_freq buffers, a stored tied lm_head) go out
  // as stored; a quantized source's stored parts do not (its modules went out above).
  int64_t kept_as_stored = 0;
  for (const std::string& name : checkpoint->TensorNames()) {
    if (written.count(name) > 0) continue;
    if (checkpoint->quantization() != nullptr && checkpoint->quantization()->OwnsTensor(name)) continue;
    const SafetensorsTensorInfo* info = checkpoint->Find(name);
    ASSIGN_OR_RETURN(torch::Tensor t, checkpoint->Load(name, info->shape, ToScalarType(info->dtype), torch::kCPU));
    exported.tensors.emplace_back(name, std::move(t));
    ++kept_as_stored;
  }

  std::error_code ec;
  fs::create_directories(options.out_dir, ec);
  if (ec) return InternalError("cannot create --out " + options.out_dir + ": " + ec.message());
  const std::string weights_path = (fs::path(options.out_dir) / kSingleWeightsFileName).string();
  RETURN_IF_ERROR(WriteSafetensors(weights_path, exported.tensors,
                                   {{"format", "pt"}, {"dtm_compression", config.Canonical()}}));

  // config.json as the source has it, torch_dtype following --dtype, and the quantization this
  // folder holds (none for float; a quantized source's is replaced).
  const std::string config_src = (fs::path(options.model_dir) / kConfigFileName).string();
  ASSIGN_OR_RETURN(std::string config_text, ReadTextFile(config_src));
  nlohmann::json config_json;
  try {
    config_json = nlohmann::json::parse(config_text);
  } catch (const nlohmann::json::exception& e) {
    return DataLossError(config_src + ": " + e.what());
  }
  if (!options.runtime.dtype.empty()) config_json["torch_dtype"] = DTypeName(dtype);
  config_json.erase("quantization_config");
  if (!exported.groups.empty()) {
    config_json["quantization_config"] = QuantizationConfigJson(exported.groups, exported.ignore);
  }
  RETURN_IF_ERROR(WriteTextFile((fs::path(options.out_dir) / kConfigFileName).string(), config_json.dump(2) + "\n"));

  std::vector<std::string> files = {kConfigFileName, kSingleWeightsFileName};
  for (const char* name : kCheckpointSideFiles) {
    const fs::path from = fs::path(options.model_dir) / name;
    if (!fs::is_regular_file(from, ec)) continue;
    RETURN_IF_ERROR(CopyFile(from.string(), (fs::path(options.out_dir) / name).string()));
    files.push_back(name);
  }

  nlohmann::json components = nlohmann::json::array();
  for (const auto& [id, method] : config.entries) components.push_back(id.Name() + "=" + method.ToString());
  nlohmann::json quantized = nlohmann::json::array();
  for (const auto& [scheme, modules] : exported.groups) {
    quantized.push_back({{"scheme", scheme.ToString()}, {"modules", modules.size()}});
  }
  const uintmax_t bytes = FileBytes({weights_path});
  const uintmax_t original_bytes = FileBytes(checkpoint->WeightFiles());
  const double ratio = original_bytes > 0 ? static_cast<double>(bytes) / static_cast<double>(original_bytes) : 0.0;
  PrintJson({{"out", options.out_dir},
             {"format", options.format},
             {"config", config.Canonical()},
             {"components_changed", config.entries.size()},
             {"components", components},
             {"tensors", exported.tensors.size()},
             {"tensors_kept_as_stored", kept_as_stored},
             {"quantized", quantized},
             {"pruned", PrunedSizes(config, *model)},
             {"dtype", DTypeName(dtype)},
             {"device", device.str()},
             {"files", files},
             {"bytes", bytes},
             {"original_bytes", original_bytes},
             {"bytes_ratio", ratio},
             {"seconds", SecondsSince(t0)}});
  return OkStatus();
}

}  // namespace dtm::cli
