#include "cli/engine_support.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <system_error>

#include "worker/engine/tensor_util.h"

namespace dtm::cli {

double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void PrintJson(const nlohmann::json& j) { std::cout << j.dump(2) << std::endl; }

void Progress(const char* what, int64_t done, int64_t total) {
  std::fprintf(stderr, "\r%s: %lld/%lld", what, static_cast<long long>(done), static_cast<long long>(total));
  if (done == total) std::fprintf(stderr, "\n");
}

void ApplyThreads(int threads) {
  if (threads > 0) torch::set_num_threads(threads);
}

StatusOr<LoadedModel> LoadModel(const std::string& dir, const RuntimeOptions& runtime,
                                const std::function<Status(const LlamaConfig&)>& check_inputs) {
  ApplyThreads(runtime.threads);
  if (runtime.batch_size < 1) return InvalidArgumentError("--batch-size must be at least 1");
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.device, ParseDevice(runtime.device));
  loaded.dtype = DefaultDTypeFor(loaded.device);
  if (!runtime.dtype.empty()) {
    ASSIGN_OR_RETURN(loaded.dtype, ParseDType(runtime.dtype));
  }
  RETURN_IF_ERROR(CheckDTypeOnDevice(loaded.dtype, loaded.device));
  ASSIGN_OR_RETURN(loaded.checkpoint, Checkpoint::Open(dir));
  if (check_inputs) RETURN_IF_ERROR(check_inputs(loaded.checkpoint->config()));
  ASSIGN_OR_RETURN(loaded.model, LlamaModel::Load(*loaded.checkpoint, ModelOptions{loaded.dtype, loaded.device}));
  return loaded;
}

nlohmann::json SummaryJson(const DivergenceSummary& s) {
  return {{"fdt75", s.fdt75}, {"fdt_mean", s.fdt_mean}, {"sdt_mean", s.sdt_mean}, {"dppl", s.dppl},
          {"nll_mean", s.nll_mean}};
}

nlohmann::json EvalResultJson(const EvalResult& r) {
  nlohmann::json per_probe = nlohmann::json::array();
  for (size_t i = 0; i < r.per_probe.size(); ++i) {
    per_probe.push_back({{"id", r.ids[i]},
                         {"fdt", r.per_probe[i].fdt},
                         {"sdt", r.per_probe[i].sdt},
                         {"nll", r.per_probe[i].nll},
                         {"outlier_columns", r.outlier_columns[i]}});
  }
  nlohmann::json out = SummaryJson(r.summary);
  out["outlier_columns_mean"] = r.outlier_columns_mean;
  out["per_probe"] = std::move(per_probe);
  out["fdt_histogram"] = r.summary.fdt_histogram;
  return out;
}

std::optional<std::string> ForeignBaselineWarning(const Baseline& baseline, const std::string& baseline_path,
                                                  const std::string& model_fingerprint) {
  if (baseline.model_fingerprint.empty() || baseline.model_fingerprint == model_fingerprint) return std::nullopt;
  return "baseline " + baseline_path + " holds the greedy completions of another model (fingerprint " +
         baseline.model_fingerprint.substr(0, 12) + ") than --model (fingerprint " + model_fingerprint.substr(0, 12) +
         "): the metrics compare this model with that one, and the noise floor is this model against that "
         "baseline (the candidate itself), not the reference model's noise floor; `dtmctl compare --reference "
         "REFERENCE --model MODEL --probes PROBES` reports both";
}

void PrintWarning(const char* command, const std::string& text) {
  std::cerr << "dtmctl " << command << ": warning: " << text << std::endl;
}

Status CheckOutDirIsFree(const std::string& dir) { return CheckOutputFolderIsFree(dir, "--out"); }

bool ConfigNeedsCalibration(const CompressionConfig& config) {
  for (const auto& entry : config.entries) {
    if (entry.second.kind == MethodKind::kGptq) return true;
  }
  return false;
}

}  // namespace dtm::cli
