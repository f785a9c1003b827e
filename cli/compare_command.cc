#include "cli/compare_command.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <system_error>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "cli/engine_support.h"
#include "common/baseline_file.h"
#include "common/input_checks.h"
#include "common/probe_file.h"
#include "common/sha256.h"
#include "common/xdg_dirs.h"
#include "worker/engine/baseline.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/tensor_util.h"

namespace dtm::cli {
namespace {

namespace fs = std::filesystem;

constexpr char kCommand[] = "compare";

// The cache file's name: everything that determines a baseline (SPEC: model fingerprint, probe set,
// n, completion length, precision), under a versioned domain of its own.
std::string BaselineCacheKey(const std::string& model_fingerprint, const ProbeSet& probes, int64_t completion,
                             torch::ScalarType dtype) {
  const int64_t prefix = probes.probes.empty() ? 0 : static_cast<int64_t>(probes.probes.front().tokens.size());
  return Sha256Hex("dtm compare baseline v1\nmodel=" + model_fingerprint + "\nprobes=" + probes.Fingerprint() +
                   "\nn=" + std::to_string(prefix) + "\ncompletion=" + std::to_string(completion) +
                   "\ndtype=" + DTypeName(dtype) + "\n");
}

// Why `baseline` is not the completion of exactly `probes` by `completion` tokens of the model with
// `model_fingerprint`; nullopt when it is. A cache file can be stale (written by hand, truncated
// by a full disk and renamed, or a key collision of a changed format): such a file is recomputed,
// never trusted.
std::optional<std::string> CachedBaselineMismatch(const Baseline& baseline, const ProbeSet& probes, int64_t completion,
                                                  const std::string& model_fingerprint) {
  if (baseline.model_fingerprint != model_fingerprint) return "it records another model's fingerprint";
  if (baseline.rows.size() != probes.probes.size()) {
    return "it holds " + std::to_string(baseline.rows.size()) + " rows for " + std::to_string(probes.probes.size()) +
           " probes";
  }
  for (size_t i = 0; i < probes.probes.size(); ++i) {
    const BaselineRow& row = baseline.rows[i];
    const Probe& probe = probes.probes[i];
    const auto prefix = static_cast<int64_t>(probe.tokens.size());
    if (row.id != probe.id || row.prefix_len != prefix || row.completion_len() != completion ||
        !std::equal(probe.tokens.begin(), probe.tokens.end(), row.tokens.begin())) {
      return "row " + std::to_string(i + 1) + " is not probe '" + probe.id + "' completed by " +
             std::to_string(completion) + " tokens";
    }
  }
  return std::nullopt;
}

// Writes `baseline` to `path` through a file of this process's own, renamed over `path`: two
// comparisons caching the same baseline at once each write a whole file, and a reader sees one or
// the other, never a mixture.
Status WriteCacheFile(const std::string& path, const Baseline& baseline) {
  std::error_code ec;
  fs::create_directories(fs::path(path).parent_path(), ec);
  if (ec) return InternalError("cannot create " + fs::path(path).parent_path().string() + ": " + ec.message());
  const std::string tmp = path + "." + std::to_string(getpid()) + ".tmp.jsonl.gz";  // .gz: written gzipped
  if (Status s = WriteBaselineFile(tmp, baseline); !s.ok()) {
    fs::remove(tmp, ec);
    return s;
  }
  fs::rename(tmp, path, ec);
  if (ec) {
    const std::string message = "cannot rename " + tmp + " to " + path + ": " + ec.message();
    fs::remove(tmp, ec);
    return InternalError(message);
  }
  return OkStatus();
}

// The bytes of `path`, or nullopt when it is not a readable file.
std::optional<std::string> FileBytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return std::nullopt;
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Token ids mean the same only under the same tokenizer: a tokenizer file both folders hold with
// different content, or another vocabulary size, makes the comparison meaningless. Warned, not
// refused: a rebuilt tokenizer.json can differ in formatting alone.
std::vector<std::string> TokenizerWarnings(const CompareOptions& options, const LlamaConfig& reference,
                                           const LlamaConfig& candidate) {
  std::vector<std::string> out;
  if (reference.vocab_size != candidate.vocab_size) {
    out.push_back("the candidate's vocab_size (" + std::to_string(candidate.vocab_size) +
                  ") differs from the reference's (" + std::to_string(reference.vocab_size) +
                  "): token ids of the baseline may mean other pieces to it");
  }
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    std::optional<std::string> a = FileBytes(fs::path(options.reference_dir) / name);
    std::optional<std::string> b = FileBytes(fs::path(options.model_dir) / name);
    if (a && b && *a != *b) {
      out.push_back(std::string(name) + " differs between the reference and the candidate: the comparison is "
                    "token by token and means something only under one tokenizer");
    }
  }
  return out;
}

std::string Fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

void PrintTable(const nlohmann::json& out) {
  std::ostringstream t;
  const nlohmann::json& ref = out["reference"];
  const nlohmann::json& cand = out["candidate"];
  const nlohmann::json& base = out["baseline"];
  t << "reference  " << ref["model"].get<std::string>() << "\n"
    << "           fingerprint " << ref["fingerprint"].get<std::string>() << "\n"
    << "candidate  " << cand["model"].get<std::string>() << "\n"
    << "           fingerprint " << cand["fingerprint"].get<std::string>()
    << (out["same_weights"].get<bool>() ? "  (the reference's weights)" : "") << "\n"
    << "baseline   the reference's greedy completions, "
    << (base["source"] == "cache" ? "from the cache: " + base["cache_file"].get<std::string>()
        : base["cache_file"].is_null() ? std::string("computed (not cached)")
                                       : "computed, cached at " + base["cache_file"].get<std::string>())
    << "\n"
    << "probes     " << out["probes"].get<int64_t>() << " (fingerprint "
    << out["probes_fingerprint"].get<std::string>().substr(0, 12) << "), prefix n = " << out["prefix"].get<int64_t>()
    << ", completion M = " << out["completion"].get<int64_t>() << ", " << out["dtype"].get<std::string>() << " on "
    << out["device"].get<std::string>() << "\n\n";
  char line[256];
  std::snprintf(line, sizeof line, "%-36s  %6s  %8s  %8s  %8s  %8s\n", "", "fdt75", "fdt_mean", "sdt_mean", "dppl",
                "nll_mean");
  t << line;
  auto row = [&](const char* label, const nlohmann::json& m) {
    std::snprintf(line, sizeof line, "%-36s  %6s  %8s  %8s  %8s  %8s\n", label, Fixed(m["fdt75"].get<double>(), 2).c_str(),
                  Fixed(m["fdt_mean"].get<double>(), 2).c_str(), Fixed(m["sdt_mean"].get<double>(), 2).c_str(),
                  Fixed(m["dppl"].get<double>(), 4).c_str(), Fixed(m["nll_mean"].get<double>(), 4).c_str());
    t << line;
  };
  row("reference (noise floor: vs itself)", ref["noise_floor"]);
  row("candidate (vs the reference)", cand);
  std::cout << t.str() << std::flush;
}

}  // namespace

std::string DefaultBaselineCacheDir() {
  const std::optional<std::string> cache = XdgDir("XDG_CACHE_HOME", "/.cache");
  return cache ? (fs::path(*cache) / "dtm" / "baselines").string() : "";
}

Status CompareCommand(const CompareOptions& options) {
  const auto t0 = Clock::now();
  if (options.format != "table" && options.format != "json") {
    return InvalidArgumentError("--format must be table or json, got '" + options.format + "'");
  }
  if (options.completion < 1) return InvalidArgumentError("--completion must be at least 1");
  if (!options.use_cache && !options.cache_dir.empty()) {
    return InvalidArgumentError("--cache-dir and --no-cache contradict each other; give one");
  }
  ASSIGN_OR_RETURN(ProbeSet probes, ReadProbeFile(options.probes));
  nlohmann::json warnings = nlohmann::json::array();
  auto warn = [&](const std::string& text) {
    PrintWarning(kCommand, text);
    warnings.push_back(text);
  };

  // The candidate's config before any weights load: a candidate that cannot take these probes
  // fails now, not after the reference's baseline.
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> candidate_checkpoint, Checkpoint::Open(options.model_dir));
  const LlamaConfig candidate_config = candidate_checkpoint->config();
  candidate_checkpoint.reset();
  RETURN_IF_ERROR(ValidateProbeSetForModel(probes, candidate_config, options.completion,
                                           options.probes + " (for the candidate " + options.model_dir + ")"));

  std::string cache_dir = options.cache_dir;
  if (options.use_cache && cache_dir.empty()) {
    cache_dir = DefaultBaselineCacheDir();
    if (cache_dir.empty()) warn("neither XDG_CACHE_HOME nor HOME is set: the baseline is not cached (--cache-dir DIR)");
  }

  // The reference: its baseline (cached or computed) and its noise floor.
  auto check_reference = [&](const LlamaConfig& config) -> Status {
    RETURN_IF_ERROR(ValidateProbeSetForModel(probes, config, options.completion, options.probes));
    RETURN_IF_ERROR(CheckEqualProbeLengths(probes, options.probes));
    for (std::string& w : TokenizerWarnings(options, config, candidate_config)) warn(w);
    return OkStatus();
  };
  ASSIGN_OR_RETURN(LoadedModel reference, LoadModel(options.reference_dir, options.runtime, check_reference));
  ASSIGN_OR_RETURN(const std::string reference_fingerprint, reference.checkpoint->Fingerprint());
  const std::string dtype = DTypeName(reference.dtype);
  const std::string device = reference.device.str();

  std::string cache_file;
  if (!cache_dir.empty()) {
    cache_file = (fs::path(cache_dir) /
                  (BaselineCacheKey(reference_fingerprint, probes, options.completion, reference.dtype) + ".jsonl.gz"))
                     .string();
  }
  const auto baseline_t0 = Clock::now();
  std::optional<Baseline> baseline;
  std::error_code ec;
  if (!cache_file.empty() && fs::exists(cache_file, ec)) {
    StatusOr<Baseline> cached = ReadBaselineFile(cache_file);
    std::optional<std::string> why;
    if (!cached.ok()) {
      why = cached.status().message();
    } else if (Status s = ValidateBaselineForModel(*cached, reference.model->config(), cache_file); !s.ok()) {
      why = s.message();
    } else {
      why = CachedBaselineMismatch(*cached, probes, options.completion, reference_fingerprint);
    }
    if (why) {
      warn("ignoring the cached baseline " + cache_file + " (" + *why + "); computing it again");
    } else {
      baseline = std::move(*cached);
      std::cerr << "dtmctl compare: the reference's baseline from the cache: " << cache_file << std::endl;
    }
  }
  const bool from_cache = baseline.has_value();
  if (!baseline) {
    GenerateOptions gen;
    gen.completion_len = options.completion;
    gen.batch_size = options.runtime.batch_size;
    gen.source = options.probes;
    gen.on_progress = [](int64_t done, int64_t total) { Progress("baseline (reference)", done, total); };
    ASSIGN_OR_RETURN(baseline, GenerateBaseline(*reference.model, probes, gen));
    baseline->model_fingerprint = reference_fingerprint;
    if (!cache_file.empty()) {
      if (Status s = WriteCacheFile(cache_file, *baseline); s.ok()) {
        std::cerr << "dtmctl compare: the reference's baseline cached at " << cache_file << std::endl;
      } else {
        warn("the baseline is not cached: " + s.message());
        cache_file.clear();
      }
    }
  }
  const double baseline_seconds = SecondsSince(baseline_t0);

  dtm::EvalOptions eval;
  eval.batch_size = options.runtime.batch_size;
  EvalResult floor;
  {
    // As eval measures its noise floor: the uncompressed model against its own baseline.
    Evaluator evaluator(reference.model.get(), nullptr);
    eval.on_progress = [](int64_t done, int64_t total) { Progress("noise floor (reference)", done, total); };
    ASSIGN_OR_RETURN(floor, evaluator.EvaluateCurrent(*baseline, eval));
  }
  reference = LoadedModel{};  // one model in memory at a time

  // The candidate against the reference's baseline.
  const std::string source = "the baseline of " + options.reference_dir;
  auto check_candidate = [&](const LlamaConfig& config) { return ValidateBaselineForModel(*baseline, config, source); };
  ASSIGN_OR_RETURN(LoadedModel candidate, LoadModel(options.model_dir, options.runtime, check_candidate));
  ASSIGN_OR_RETURN(const std::string candidate_fingerprint, candidate.checkpoint->Fingerprint());
  Evaluator evaluator(candidate.model.get(), nullptr);
  eval.on_progress = [](int64_t done, int64_t total) { Progress("eval (candidate)", done, total); };
  ASSIGN_OR_RETURN(EvalResult result, evaluator.EvaluateCurrent(*baseline, eval));

  nlohmann::json candidate_json = {{"model", options.model_dir}, {"fingerprint", candidate_fingerprint}};
  candidate_json.update(EvalResultJson(result));
  const auto prefix = static_cast<int64_t>(probes.probes.front().tokens.size());
  nlohmann::json out = {
      {"reference",
       {{"model", options.reference_dir}, {"fingerprint", reference_fingerprint}, {"noise_floor", SummaryJson(floor.summary)}}},
      {"candidate", std::move(candidate_json)},
      {"same_weights", reference_fingerprint == candidate_fingerprint},
      {"baseline",
       {{"source", from_cache ? "cache" : "computed"},
        {"cache_file", cache_file.empty() ? nlohmann::json(nullptr) : nlohmann::json(cache_file)},
        {"fingerprint", baseline->Fingerprint()},
        {"seconds", baseline_seconds}}},
      {"probes", result.per_probe.size()},
      {"probes_fingerprint", probes.Fingerprint()},
      {"prefix", prefix},
      {"completion", options.completion},
      {"dtype", dtype},
      {"device", device},
      {"seconds", SecondsSince(t0)},
      {"warnings", std::move(warnings)}};
  if (options.format == "json") {
    PrintJson(out);
  } else {
    PrintTable(out);
  }
  return OkStatus();
}

}  // namespace dtm::cli
