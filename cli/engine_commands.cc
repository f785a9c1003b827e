#include "cli/engine_commands.h"

#include <chrono>
#include <cstdio>
#include <iostream>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "worker/engine/baseline.h"
#include "worker/engine/brown_corpus.h"
#include "worker/engine/calibration.h"
#include "worker/engine/checkpoint.h"
#include "common/compression_config.h"
#include "worker/engine/evaluator.h"
#include "common/jsonl.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/probes.h"
#include "worker/engine/tensor_util.h"
#include "worker/engine/tokenizer.h"
#include "worker/engine/trainer.h"

namespace dtm::cli {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void PrintJson(const nlohmann::json& j) { std::cout << j.dump(2) << std::endl; }

void Progress(const char* what, int64_t done, int64_t total) {
  std::fprintf(stderr, "\r%s: %lld/%lld", what, static_cast<long long>(done), static_cast<long long>(total));
  if (done == total) std::fprintf(stderr, "\n");
}

void ApplyThreads(int threads) {
  if (threads > 0) torch::set_num_threads(threads);
}

struct LoadedModel {
  std::unique_ptr<Checkpoint> checkpoint;
  std::unique_ptr<LlamaModel> model;
  torch::Device device = torch::kCPU;
  torch::ScalarType dtype = torch::kFloat32;
};

StatusOr<LoadedModel> LoadModel(const std::string& dir, const RuntimeOptions& runtime) {
  ApplyThreads(runtime.threads);
  if (runtime.batch_size < 1) return InvalidArgumentError("--batch-size must be at least 1");
  LoadedModel loaded;
  ASSIGN_OR_RETURN(loaded.device, ParseDevice(runtime.device));
  loaded.dtype = DefaultDTypeFor(loaded.device);
  if (!runtime.dtype.empty()) {
    ASSIGN_OR_RETURN(loaded.dtype, ParseDType(runtime.dtype));
  }
  ASSIGN_OR_RETURN(loaded.checkpoint, Checkpoint::Open(dir));
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
    per_probe.push_back({{"id", r.ids[i]}, {"fdt", r.per_probe[i].fdt}, {"sdt", r.per_probe[i].sdt}, {"nll", r.per_probe[i].nll}});
  }
  nlohmann::json out = SummaryJson(r.summary);
  out["per_probe"] = std::move(per_probe);
  out["fdt_histogram"] = r.summary.fdt_histogram;
  return out;
}

StatusOr<std::vector<std::vector<int32_t>>> CalibrationSequences(const EvalOptions& options, const Baseline& baseline) {
  std::vector<std::vector<int32_t>> sequences;
  if (options.calibration.empty()) {
    for (const BaselineRow& row : baseline.rows) sequences.push_back(row.tokens);
  } else {
    ASSIGN_OR_RETURN(ProbeSet set, ReadProbeFile(options.calibration));
    for (Probe& p : set.probes) sequences.push_back(std::move(p.tokens));
  }
  if (static_cast<int64_t>(sequences.size()) > options.calibration_count) sequences.resize(options.calibration_count);
  return sequences;
}

bool ConfigNeedsCalibration(const CompressionConfig& config) {
  for (const auto& entry : config.entries) {
    if (entry.second.kind == MethodKind::kGptq) return true;
  }
  return false;
}

}  // namespace

Status MakeTinyModelCommand(const MakeTinyModelOptions& options) {
  ApplyThreads(options.threads);
  TinyModelOptions train;
  train.corpus_dir = options.corpus_dir;
  train.out_dir = options.out_dir;
  train.steps = options.steps;
  train.vocab_size = options.vocab_size;
  train.seed = options.seed;
  train.log = [](const std::string& line) { std::cerr << "make-tiny-model: " << line << std::endl; };
  if (options.steps < 1) return InvalidArgumentError("--steps must be at least 1");
  if (options.vocab_size < 300) return InvalidArgumentError("--vocab must be at least 300 (259 special and byte pieces)");
  ASSIGN_OR_RETURN(TinyModelReport report, MakeTinyModel(train));
  PrintJson({{"out", options.out_dir},
             {"parameters", report.parameters},
             {"train_tokens", report.train_tokens},
             {"held_out_ppl", report.held_out_ppl},
             {"final_train_loss", report.final_train_loss},
             {"seconds", report.seconds},
             {"sample", report.sample}});
  return OkStatus();
}

Status BrownTextCommand(const BrownTextOptions& options) {
  if (options.split != "train" && options.split != "held-out" && options.split != "all") {
    return InvalidArgumentError("--split must be train, held-out or all, got '" + options.split + "'");
  }
  ASSIGN_OR_RETURN(std::vector<BrownDocument> docs, ReadBrownCorpus(options.corpus_dir));
  std::vector<BrownDocument> chosen;
  for (size_t i = 0; i < docs.size(); ++i) {
    const bool held_out = i % 10 == 9;  // as MakeTinyModel splits
    if (options.split == "all" || (options.split == "held-out") == held_out) chosen.push_back(docs[i]);
  }
  RETURN_IF_ERROR(WriteTextFile(options.out, BrownToPlainText(chosen)));
  PrintJson({{"out", options.out}, {"documents", chosen.size()}, {"split", options.split}});
  return OkStatus();
}

Status MakeProbesCommand(const MakeProbesOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromModelDir(options.model_dir));
  dtm::MakeProbesOptions make;
  make.count = options.count;
  make.prefix_len = options.prefix;
  ASSIGN_OR_RETURN(make.format, ParseCorpusFormat(options.format));
  ASSIGN_OR_RETURN(ProbeSet set, MakeProbes(options.corpus, *tokenizer, make));
  RETURN_IF_ERROR(WriteProbeFile(options.out, set));
  PrintJson({{"out", options.out}, {"probes", set.probes.size()}, {"prefix", options.prefix}, {"fingerprint", set.Fingerprint()}});
  return OkStatus();
}

Status BaselineCommand(const BaselineOptions& options) {
  ASSIGN_OR_RETURN(ProbeSet probes, ReadProbeFile(options.probes));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options.model_dir, options.runtime));
  GenerateOptions gen;
  gen.completion_len = options.completion;
  gen.batch_size = options.runtime.batch_size;
  gen.on_progress = [](int64_t done, int64_t total) { Progress("baseline", done, total); };
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(Baseline baseline, GenerateBaseline(*loaded.model, probes, gen));
  const double seconds = SecondsSince(t0);
  RETURN_IF_ERROR(WriteBaselineFile(options.out, baseline));
  const double generated = static_cast<double>(baseline.rows.size() * options.completion);
  PrintJson({{"out", options.out},
             {"rows", baseline.rows.size()},
             {"completion", options.completion},
             {"dtype", DTypeName(loaded.dtype)},
             {"device", loaded.device.str()},
             {"probes_fingerprint", probes.Fingerprint()},
             {"fingerprint", baseline.Fingerprint()},
             {"seconds", seconds},
             {"generated_tokens_per_second", generated / seconds}});
  return OkStatus();
}

Status EvalCommand(const EvalOptions& options) {
  ASSIGN_OR_RETURN(Baseline baseline, ReadBaselineFile(options.baseline));
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options.model_dir, options.runtime));
  ASSIGN_OR_RETURN(CompressionConfig config,
                   ParseCompressionConfig(options.compress, static_cast<int>(loaded.model->config().num_hidden_layers)));
  RETURN_IF_ERROR(ValidateBaselineForModel(baseline, *loaded.model, options.baseline));

  std::unique_ptr<CalibrationHessians> calibration;
  if (ConfigNeedsCalibration(config)) {
    ASSIGN_OR_RETURN(auto sequences, CalibrationSequences(options, baseline));
    calibration = std::make_unique<CalibrationHessians>(std::move(sequences), options.runtime.batch_size);
  }
  Evaluator evaluator(loaded.model.get(), calibration.get());
  dtm::EvalOptions eval;
  eval.batch_size = options.runtime.batch_size;
  eval.on_progress = [](int64_t done, int64_t total) { Progress("eval", done, total); };

  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(EvalResult result, evaluator.Evaluate(baseline, config, eval));
  const double seconds = SecondsSince(t0);
  nlohmann::json out = EvalResultJson(result);
  out["config"] = config.Canonical();
  out["probes"] = result.per_probe.size();
  out["completion"] = result.completion_len;
  out["dtype"] = DTypeName(loaded.dtype);
  out["device"] = loaded.device.str();
  out["baseline_fingerprint"] = baseline.Fingerprint();
  out["seconds"] = seconds;
  // The uncompressed model against its own baseline: numeric noise (bf16, kernels) shows here.
  if (options.noise_floor && !config.empty()) {
    ASSIGN_OR_RETURN(EvalResult floor, evaluator.EvaluateCurrent(baseline, eval));
    out["noise_floor"] = SummaryJson(floor.summary);
  } else if (config.empty()) {
    out["noise_floor"] = SummaryJson(result.summary);
  }
  PrintJson(out);
  return OkStatus();
}

Status PerplexityCommand(const PerplexityOptions& options) {
  if (options.completion < 1) return InvalidArgumentError("--completion must be at least 1");
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options.model_dir, options.runtime));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromModelDir(options.model_dir));
  dtm::MakeProbesOptions make;
  make.count = options.count;
  make.prefix_len = options.prefix + options.completion;
  ASSIGN_OR_RETURN(make.format, ParseCorpusFormat(options.format));
  ASSIGN_OR_RETURN(ProbeSet windows, MakeProbes(options.corpus, *tokenizer, make));
  Evaluator evaluator(loaded.model.get(), nullptr);
  dtm::EvalOptions eval;
  eval.batch_size = options.runtime.batch_size;
  ASSIGN_OR_RETURN(PerplexityResult ppl, evaluator.Perplexity(windows, options.prefix, eval));
  PrintJson({{"ppl", ppl.ppl}, {"nll_mean", ppl.nll_mean}, {"windows", ppl.windows}, {"tokens_scored", ppl.tokens_scored},
             {"prefix", options.prefix}, {"completion", options.completion}, {"dtype", DTypeName(loaded.dtype)}});
  return OkStatus();
}

}  // namespace dtm::cli
