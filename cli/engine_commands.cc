#include "cli/engine_commands.h"

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <set>
#include <system_error>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "cli/engine_support.h"
#include "worker/engine/baseline.h"
#include "worker/engine/brown_corpus.h"
#include "worker/engine/calibration.h"
#include "worker/engine/checkpoint.h"
#include "common/calibration_set.h"
#include "common/compression_config.h"
#include "common/input_checks.h"
#include "worker/engine/evaluator.h"
#include "common/jsonl.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/perplexity_windows.h"
#include "worker/engine/probes.h"
#include "worker/engine/safetensors.h"
#include "worker/engine/tensor_util.h"
#include "worker/engine/tokenizer.h"
#include "worker/engine/trainer.h"

namespace dtm::cli {
namespace {

// The configs one eval or ppl run scores: --compress's one, or --compress-file's lines (blank lines
// and `#` comments skipped), each with where it came from for error messages.
struct ConfigText {
  std::string text;
  std::string where;  // "FILE:LINE", or "" for --compress
};

StatusOr<std::vector<ConfigText>> ConfigTexts(const std::string& compress, const std::string& compress_file) {
  if (compress_file.empty()) return std::vector<ConfigText>{{compress, ""}};
  if (!compress.empty()) return InvalidArgumentError("give --compress or --compress-file, not both");
  // A 7B config naming every component is about 15 KB: 64 MiB is thousands of them, and /dev/zero or
  // a FIFO is refused rather than read forever.
  ReadLimits limits;
  limits.max_bytes = 64ull << 20;
  limits.regular_file_only = true;
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(compress_file, limits));
  std::vector<ConfigText> texts;
  std::string config;
  while (reader->Next(&config)) {
    const size_t first = config.find_first_not_of(" \t\r");
    if (first == std::string::npos || config[first] == '#') continue;
    config = config.substr(first, config.find_last_not_of(" \t\r") + 1 - first);
    texts.push_back({std::move(config), compress_file + ":" + std::to_string(reader->line_number())});
  }
  RETURN_IF_ERROR(reader->status());
  if (texts.empty()) return InvalidArgumentError(compress_file + ": holds no config (one COMPONENT=METHOD,... per line)");
  return texts;
}

// Parses every config against the model's layer count; an error names the file and line it came from.
StatusOr<std::vector<CompressionConfig>> ParseConfigTexts(const std::vector<ConfigText>& texts, int layers) {
  std::vector<CompressionConfig> configs;
  for (const ConfigText& text : texts) {
    StatusOr<CompressionConfig> config = ParseCompressionConfig(text.text, layers);
    if (!config.ok()) {
      if (text.where.empty()) return config.status();
      return InvalidArgumentError(text.where + ": " + config.status().message());
    }
    configs.push_back(std::move(*config));
  }
  return configs;
}

bool AnyNeedsCalibration(const std::vector<CompressionConfig>& configs) {
  for (const CompressionConfig& config : configs) {
    if (ConfigNeedsCalibration(config)) return true;
  }
  return false;
}

// One result: pretty-printed for --compress (as always), one compact line for each --compress-file
// config, flushed as it finishes.
void PrintResult(const nlohmann::json& out, bool one_of_a_file) {
  if (one_of_a_file) {
    std::cout << out.dump() << std::endl;
  } else {
    PrintJson(out);
  }
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
  ASSIGN_OR_RETURN(make.sampling, ParseProbeSampling(options.sample));
  // A random probe set is reproducible only with its seed written down, so the seed is never implicit.
  if (make.sampling == ProbeSampling::kRandom && !options.seed_given) {
    return InvalidArgumentError("--sample random needs --seed S");
  }
  if (make.sampling == ProbeSampling::kFirst && options.seed_given) {
    return InvalidArgumentError("--seed applies to --sample random only (--sample first takes documents in corpus order)");
  }
  make.seed = options.seed;
  ASSIGN_OR_RETURN(ProbeSet set, MakeProbes(options.corpus, *tokenizer, make));
  RETURN_IF_ERROR(WriteProbeFile(options.out, set));
  nlohmann::json out = {{"out", options.out}, {"probes", set.probes.size()}, {"prefix", options.prefix},
                        {"sample", options.sample}, {"fingerprint", set.Fingerprint()}};
  if (make.sampling == ProbeSampling::kRandom) out["seed"] = options.seed;
  PrintJson(out);
  return OkStatus();
}

Status BaselineCommand(const BaselineOptions& options) {
  ASSIGN_OR_RETURN(ProbeSet probes, ReadProbeFile(options.probes));
  if (options.completion < 1) return InvalidArgumentError("--completion must be at least 1");
  // GenerateBaseline checks these too; here they run before the weights load.
  auto check = [&](const LlamaConfig& config) -> Status {
    RETURN_IF_ERROR(ValidateProbeSetForModel(probes, config, options.completion, options.probes));
    return CheckEqualProbeLengths(probes, options.probes);
  };
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options.model_dir, options.runtime, check));
  GenerateOptions gen;
  gen.completion_len = options.completion;
  gen.batch_size = options.runtime.batch_size;
  gen.source = options.probes;
  gen.on_progress = [](int64_t done, int64_t total) { Progress("baseline", done, total); };
  const auto t0 = Clock::now();
  ASSIGN_OR_RETURN(Baseline baseline, GenerateBaseline(*loaded.model, probes, gen));
  const double seconds = SecondsSince(t0);
  // Recorded in the file, so that eval can tell a model's own baseline from another model's.
  ASSIGN_OR_RETURN(baseline.model_fingerprint, loaded.checkpoint->Fingerprint());
  RETURN_IF_ERROR(WriteBaselineFile(options.out, baseline));
  const double generated = static_cast<double>(baseline.rows.size() * options.completion);
  PrintJson({{"out", options.out},
             {"rows", baseline.rows.size()},
             {"completion", options.completion},
             {"dtype", DTypeName(loaded.dtype)},
             {"device", loaded.device.str()},
             {"probes_fingerprint", probes.Fingerprint()},
             {"fingerprint", baseline.Fingerprint()},
             {"model_fingerprint", baseline.model_fingerprint},
             {"seconds", seconds},
             {"generated_tokens_per_second", generated / seconds}});
  return OkStatus();
}

Status EvalCommand(const EvalOptions& options) {
  ASSIGN_OR_RETURN(const std::vector<ConfigText> config_texts, ConfigTexts(options.compress, options.compress_file));
  ASSIGN_OR_RETURN(Baseline baseline, ReadBaselineFile(options.baseline));
  // Every input is checked against config.json before the weights load. A --calibration file is
  // checked whenever it is given, even for a config without gptq: a broken file named on the
  // command line is an error, not something to ignore.
  std::vector<CompressionConfig> configs;
  bool needs_calibration = false;
  std::optional<CalibrationSequences> calibration_set;
  auto check = [&](const LlamaConfig& model_config) -> Status {
    RETURN_IF_ERROR(ValidateBaselineForModel(baseline, model_config, options.baseline));
    ASSIGN_OR_RETURN(configs, ParseConfigTexts(config_texts, static_cast<int>(model_config.num_hidden_layers)));
    needs_calibration = AnyNeedsCalibration(configs);
    if (options.calibration == kCalibrateOnBaseline) {
      // Asked for by name: calibrating on the very sequences that are scored flatters GPTQ.
      ProbeSet rows;
      for (const BaselineRow& row : baseline.rows) rows.probes.push_back({row.id, row.tokens});
      ASSIGN_OR_RETURN(calibration_set, CutCalibrationSet(std::move(rows), options.calibration_count,
                                                          options.calibration_seq_len, "calibration (the baseline)"));
    } else if (!options.calibration.empty()) {
      ASSIGN_OR_RETURN(calibration_set, ReadCalibrationFile(options.calibration, options.calibration_count,
                                                            options.calibration_seq_len, model_config));
    } else if (needs_calibration) {
      return InvalidArgumentError("gptq needs a calibration set: --calibration FILE (a probe or baseline file), or "
                                  "--calibration baseline to calibrate on the evaluation baseline itself");
    }
    return OkStatus();
  };
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options.model_dir, options.runtime, check));
  ASSIGN_OR_RETURN(const std::string model_fingerprint, loaded.checkpoint->Fingerprint());
  nlohmann::json warnings = nlohmann::json::array();
  if (std::optional<std::string> w = ForeignBaselineWarning(baseline, options.baseline, model_fingerprint)) {
    PrintWarning("eval", *w);  // before the work, so that it can be stopped
    warnings.push_back(*w);
  }

  std::unique_ptr<CalibrationHessians> calibration;
  if (needs_calibration) {
    calibration = std::make_unique<CalibrationHessians>(std::move(*calibration_set), options.runtime.batch_size);
  }
  Evaluator evaluator(loaded.model.get(), calibration.get());
  dtm::EvalOptions eval;
  eval.batch_size = options.runtime.batch_size;
  eval.on_progress = [](int64_t done, int64_t total) { Progress("eval", done, total); };

  // The uncompressed model against its own baseline: numeric noise (bf16, kernels) shows here. One
  // run's configs share it (the evaluator restores the weights after each config).
  std::optional<nlohmann::json> noise_floor;
  for (const CompressionConfig& config : configs) {
    const auto t0 = Clock::now();
    ASSIGN_OR_RETURN(EvalResult result, evaluator.Evaluate(baseline, config, eval));
    const double seconds = SecondsSince(t0);
    nlohmann::json out = EvalResultJson(result);
    // Only where the set was used, as a run of this config alone prints it.
    if (ConfigNeedsCalibration(config)) out["calibration_fingerprint"] = calibration->fingerprint();
    out["config"] = config.Canonical();
    out["probes"] = result.per_probe.size();
    out["completion"] = result.completion_len;
    out["dtype"] = DTypeName(loaded.dtype);
    out["device"] = loaded.device.str();
    out["baseline_fingerprint"] = baseline.Fingerprint();
    out["model_fingerprint"] = model_fingerprint;
    // null: the file does not say (older files, other tools).
    out["baseline_model_fingerprint"] =
        baseline.model_fingerprint.empty() ? nlohmann::json(nullptr) : nlohmann::json(baseline.model_fingerprint);
    out["seconds"] = seconds;
    if (config.empty()) {
      out["noise_floor"] = SummaryJson(result.summary);
    } else if (options.noise_floor) {
      if (!noise_floor) {
        ASSIGN_OR_RETURN(EvalResult floor, evaluator.EvaluateCurrent(baseline, eval));
        noise_floor = SummaryJson(floor.summary);
      }
      out["noise_floor"] = *noise_floor;
    }
    out["warnings"] = warnings;
    PrintResult(out, !options.compress_file.empty());
  }
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
  // A tokenizer with more pieces than config.json's vocab_size would otherwise fail in the embedding.
  RETURN_IF_ERROR(ValidateProbeSetForModel(windows, loaded.model->config(), 0,
                                           options.corpus + " as tokenized by " + options.model_dir));
  Evaluator evaluator(loaded.model.get(), nullptr);
  dtm::EvalOptions eval;
  eval.batch_size = options.runtime.batch_size;
  ASSIGN_OR_RETURN(PerplexityResult ppl, evaluator.Perplexity(windows, options.prefix, eval));
  PrintJson({{"ppl", ppl.ppl}, {"nll_mean", ppl.nll_mean}, {"windows", ppl.windows}, {"tokens_scored", ppl.tokens_scored},
             {"prefix", options.prefix}, {"completion", options.completion}, {"dtype", DTypeName(loaded.dtype)}});
  return OkStatus();
}

Status TextPerplexityCommand(const TextPerplexityOptions& options) {
  if (options.join != "rows" && options.join != "as-is") {
    return InvalidArgumentError("--join must be rows or as-is, got '" + options.join + "'");
  }
  if (options.window < 2) {
    return InvalidArgumentError("--window " + std::to_string(options.window) +
                                ": a window must hold at least 2 tokens (its first token is not scored)");
  }
  // Every input is checked before the weights load: a 7B model takes minutes to load.
  ASSIGN_OR_RETURN(const std::vector<ConfigText> config_texts, ConfigTexts(options.compress, options.compress_file));
  std::vector<CompressionConfig> configs;
  std::unique_ptr<CalibrationHessians> calibration;
  std::unique_ptr<Tokenizer> tokenizer;
  PerplexityWindows cut;
  auto check = [&](const LlamaConfig& model_config) -> Status {
    if (options.window > model_config.max_position_embeddings) {
      return InvalidArgumentError("--window " + std::to_string(options.window) + " is longer than the context of " +
                                  options.model_dir + " (max_position_embeddings " +
                                  std::to_string(model_config.max_position_embeddings) + ")");
    }
    ASSIGN_OR_RETURN(configs, ParseConfigTexts(config_texts, static_cast<int>(model_config.num_hidden_layers)));
    // Unlike eval there is no baseline to fall back on, and calibrating on the text being scored
    // would flatter gptq: the calibration set must be named.
    for (size_t i = 0; i < configs.size(); ++i) {
      if (ConfigNeedsCalibration(configs[i]) && options.calibration.empty()) {
        const std::string where = config_texts[i].where.empty() ? "--compress" : config_texts[i].where;
        return InvalidArgumentError(where + " '" + config_texts[i].text +
                                    "' holds gptq, which needs --calibration FILE (a probe or baseline file); "
                                    "ppl does not calibrate on the text it scores");
      }
    }
    if (!options.calibration.empty()) {
      ASSIGN_OR_RETURN(CalibrationSequences set, ReadCalibrationFile(options.calibration, options.calibration_count,
                                                                     options.calibration_seq_len, model_config));
      if (AnyNeedsCalibration(configs)) {
        calibration = std::make_unique<CalibrationHessians>(std::move(set), options.runtime.batch_size);
      }
    }
    ASSIGN_OR_RETURN(std::string file_text, ReadTextFile(options.text));
    ASSIGN_OR_RETURN(tokenizer, Tokenizer::FromModelDir(options.model_dir));
    const std::string text = options.join == "rows" ? JoinLinesAsRows(file_text) : std::move(file_text);
    ASSIGN_OR_RETURN(cut, PerplexityWindowsFromText(text, *tokenizer, options.window, options.text));
    // A tokenizer with more pieces than config.json's vocab_size would otherwise fail in the embedding.
    return ValidateProbeSetForModel(cut.windows, model_config, 0, options.text + " as tokenized by " + options.model_dir);
  };
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options.model_dir, options.runtime, check));

  Evaluator evaluator(loaded.model.get(), calibration.get());
  dtm::EvalOptions eval;
  eval.batch_size = options.runtime.batch_size;
  eval.on_progress = [](int64_t done, int64_t total) { Progress("ppl windows", done, total); };
  for (const CompressionConfig& config : configs) {
    const auto t0 = Clock::now();
    RETURN_IF_ERROR(evaluator.Apply(config));
    // prefix_len 1: each window's first token only conditions, every later one is scored.
    StatusOr<PerplexityResult> ppl = evaluator.Perplexity(cut.windows, 1, eval);
    evaluator.Restore();
    if (!ppl.ok()) return ppl.status();
    nlohmann::json out = {{"ppl", ppl->ppl},
                          {"nll_mean", ppl->nll_mean},
                          {"windows", ppl->windows},
                          {"tokens_scored", ppl->tokens_scored},
                          {"window", options.window},
                          {"text_tokens", cut.text_tokens},
                          {"tokens_dropped", cut.dropped_tokens},
                          {"join", options.join},
                          {"config", config.Canonical()},
                          {"dtype", DTypeName(loaded.dtype)},
                          {"device", loaded.device.str()},
                          {"seconds", SecondsSince(t0)}};
    if (ConfigNeedsCalibration(config)) out["calibration_fingerprint"] = calibration->fingerprint();
    PrintResult(out, !options.compress_file.empty());
  }
  return OkStatus();
}

}  // namespace dtm::cli
