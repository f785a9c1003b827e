// What dtmctl's single-process commands share (engine_commands.cc, compare_command.cc): loading a
// model with the runtime flags, progress lines, the JSON of results, and the check that a baseline
// belongs to the model it is scored against. Not a public interface: the commands' headers are.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cli/engine_commands.h"
#include "common/baseline_file.h"
#include "common/status.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/llama_model.h"

namespace dtm::cli {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0);

// One JSON document on stdout, the commands' result.
void PrintJson(const nlohmann::json& j);

// "\rWHAT: done/total" on stderr, a newline when done == total.
void Progress(const char* what, int64_t done, int64_t total);

void ApplyThreads(int threads);

struct LoadedModel {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<LlamaModel> model;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
};

// `check_inputs` (if set) runs on config.json before the weights load, so that a bad input file
// fails in a second rather than after minutes of loading a large model.
StatusOr<LoadedModel> LoadModel(const std::string& dir, const RuntimeOptions& runtime,
                                const std::function<Status(const LlamaConfig&)>& check_inputs = nullptr);

// fdt75, fdt_mean, sdt_mean, dppl, nll_mean.
nlohmann::json SummaryJson(const DivergenceSummary& s);
// SummaryJson plus outlier_columns_mean, per_probe and fdt_histogram.
nlohmann::json EvalResultJson(const EvalResult& r);

// The warning due when `baseline` records the fingerprint of a model other than `model_fingerprint`
// (the model about to be scored against it as if it were its own baseline); nullopt when it records
// this model's or none (a file from before the field, or from another tool: nothing to compare).
std::optional<std::string> ForeignBaselineWarning(const Baseline& baseline, const std::string& baseline_path,
                                                  const std::string& model_fingerprint);

// "dtmctl COMMAND: warning: TEXT" on stderr.
void PrintWarning(const char* command, const std::string& text);

// Whether a config has a gptq entry, and so needs a calibration set.
bool ConfigNeedsCalibration(const CompressionConfig& config);

// OK when `dir` (an --out folder) does not exist or is an empty folder: a command that writes a
// model never overwrites one. INVALID_ARGUMENT for an empty path, FAILED_PRECONDITION otherwise.
Status CheckOutDirIsFree(const std::string& dir);

}  // namespace dtm::cli
