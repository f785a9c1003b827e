#include "coordinator/job_spec.h"

#include <fnmatch.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <sstream>
#include <system_error>
#include <unordered_set>
#include <utility>

#include "common/calibration_set.h"
#include "common/components.h"
#include "common/compression_config.h"
#include "common/training_phases.h"
#include "common/user_text.h"
#include "coordinator/spec_yaml.h"

namespace dtm {
namespace {

using spec_yaml::Entries;
using spec_yaml::Entry;
using spec_yaml::CheckKnownKeys;
using spec_yaml::Describe;
using spec_yaml::FieldError;
using spec_yaml::Find;
using spec_yaml::ReadBool;
using spec_yaml::ReadDouble;
using spec_yaml::ReadInt;
using spec_yaml::ReadMapping;
using spec_yaml::ReadNonEmptyString;
using spec_yaml::ReadString;
using spec_yaml::ReadStringList;

constexpr const char* kKindNames[] = {"evaluate", "probe", "quant-search", "sparsify-round", "train", "sparsify"};
constexpr const char* kKindList = "evaluate, probe, quant-search, sparsify-round, train, sparsify";
constexpr const char* kDtypeList = "float32, float16, bfloat16";
// The kinds that have a section of their own, named like the kind.
constexpr const char* kSectionKinds[] = {"evaluate", "probe", "quant-search", "sparsify-round", "train", "sparsify"};
// The top-level fields about probes and their evaluation, which a train job has none of.
const std::vector<std::string> kProbeFields = {"probes",      "num_probes",  "prefix", "completion", "shard_size",
                                               "noise_floor", "calibration", "ppl",    "reference"};

// Config syntax is checked at submission, before the model's layer count is known: any layer index is
// admitted here (bounded so that ComponentId::Index() cannot overflow) and re-checked by ExpandConfigs.
constexpr int kSyntaxCheckLayers = std::numeric_limits<int>::max() / kComponentKindsPerLayer - 1;

// A job's free-text name, in bytes.
constexpr size_t kMaxNameBytes = 256;

// Counts end up in uint32 proto fields and int tensor sizes: keep them within both.
constexpr int64_t kMaxCount = std::numeric_limits<int32_t>::max();

const std::vector<std::string> kTopLevelFields = {"name",       "kind",       "model",      "dtype",
                                                  "probes",     "num_probes", "prefix",     "completion",
                                                  "shard_size", "priority",   "noise_floor", "calibration",
                                                  "ppl",        "reference"};

// Where each document of a YAML stream starts; nothing else of the stream is kept.
class DocumentStarts : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override { marks.push_back(mark); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t, const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t, YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}

  std::vector<YAML::Mark> marks;
};

Status ParseEvaluateSection(const YAML::Node& section, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(section, "evaluate"));
  RETURN_IF_ERROR(CheckKnownKeys(entries, "evaluate", {"configs"}));
  const Entry* configs = Find(entries, "configs");
  if (configs == nullptr)
    return FieldError("evaluate.configs", section, "missing; list the configs to evaluate");
  ASSIGN_OR_RETURN(auto items, ReadStringList(configs->value, "evaluate.configs"));
  // Against a reference, the model as it is (config "") is the answer and always evaluated: an
  // empty list asks for that alone (a trained or sparsified model against the original).
  if (items.empty() && spec->reference.empty()) {
    return FieldError("evaluate.configs", configs->value,
                      "must list at least one config (an empty list is for a spec with `reference`: the model "
                      "as it is against it)");
  }
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string field = "evaluate.configs[" + std::to_string(i) + "]";
    StatusOr<CompressionConfig> config = ParseCompressionConfig(items[i].first, kSyntaxCheckLayers);
    if (!config.ok()) return FieldError(field, items[i].second, config.status().message());
    if (config->empty()) {
      return FieldError(field, items[i].second,
                        "empty config; the uncompressed model is evaluated by noise_floor: true");
    }
    spec->configs.push_back(config->Canonical());
  }
  return OkStatus();
}

// `SECTION.racing: {first, step, confidence, epsilon[, keep]}`: probe jobs must say how many places
// the race decides (`keep`); a search's are its beam.
Status ParseRacing(const YAML::Node& node, const std::string& section, bool needs_keep, RacingSpec* racing) {
  const std::string field = section + ".racing";
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(node, field));
  std::vector<std::string> keys = {"first", "step", "confidence", "epsilon"};
  if (needs_keep) keys.push_back("keep");
  RETURN_IF_ERROR(CheckKnownKeys(entries, field, keys));
  racing->enabled = true;
  if (const Entry* e = Find(entries, "keep")) {
    ASSIGN_OR_RETURN(racing->keep, ReadInt(e->value, field + ".keep", 1, kMaxCount));
  } else if (needs_keep) {
    return FieldError(field + ".keep", node, "missing; say how many of the best configs the race decides, e.g. keep: 10");
  }
  if (const Entry* e = Find(entries, "first")) {
    ASSIGN_OR_RETURN(racing->first, ReadInt(e->value, field + ".first", 1, kMaxCount));
  }
  if (const Entry* e = Find(entries, "step")) {
    ASSIGN_OR_RETURN(racing->step, ReadInt(e->value, field + ".step", 1, kMaxCount));
  }
  if (const Entry* e = Find(entries, "confidence")) {
    ASSIGN_OR_RETURN(racing->confidence, ReadDouble(e->value, field + ".confidence"));
    // At or below 0.5 a bound is a guess; at 1 no order statistic bounds anything.
    if (!(racing->confidence > 0.5 && racing->confidence < 1)) {
      return FieldError(field + ".confidence", e->value, "must be in (0.5, 1), e.g. 0.95");
    }
  }
  if (const Entry* e = Find(entries, "epsilon")) {
    ASSIGN_OR_RETURN(racing->epsilon, ReadDouble(e->value, field + ".epsilon"));
    if (racing->epsilon < 0) {
      return FieldError(field + ".epsilon", e->value, "must be at least 0 (FDT tokens), e.g. 1");
    }
  }
  return OkStatus();
}

Status ParseProbeSection(const YAML::Node& section, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(section, "probe"));
  RETURN_IF_ERROR(CheckKnownKeys(entries, "probe", {"methods", "components", "racing"}));
  if (const Entry* e = Find(entries, "racing")) {
    RETURN_IF_ERROR(ParseRacing(e->value, "probe", /*needs_keep=*/true, &spec->racing));
  }
  const Entry* methods = Find(entries, "methods");
  if (methods == nullptr)
    return FieldError("probe.methods", section, "missing; list the methods to probe with");
  ASSIGN_OR_RETURN(auto items, ReadStringList(methods->value, "probe.methods"));
  if (items.empty()) return FieldError("probe.methods", methods->value, "must list at least one method");
  for (size_t i = 0; i < items.size(); ++i) {
    StatusOr<CompressionMethod> method = ParseCompressionMethod(items[i].first);
    if (!method.ok()) {
      return FieldError("probe.methods[" + std::to_string(i) + "]", items[i].second,
                        method.status().message());
    }
    spec->methods.push_back(method->ToString());
  }
  if (const Entry* components = Find(entries, "components")) {
    ASSIGN_OR_RETURN(auto globs, ReadStringList(components->value, "probe.components"));
    for (auto& glob : globs) spec->components.push_back(std::move(glob.first));
  }
  return OkStatus();
}

Status ParseQuantSearchSection(const YAML::Node& section, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(section, "quant-search"));
  RETURN_IF_ERROR(
      CheckKnownKeys(entries, "quant-search", {"method", "beam", "depth", "components", "rank_by", "racing"}));
  if (const Entry* e = Find(entries, "racing")) {
    RETURN_IF_ERROR(ParseRacing(e->value, "quant-search", /*needs_keep=*/false, &spec->racing));
  }
  if (const Entry* e = Find(entries, "rank_by")) {
    ASSIGN_OR_RETURN(spec->rank_by, ReadString(e->value, "quant-search.rank_by"));
    if (spec->rank_by != "fdt75" && spec->rank_by != "dppl" && spec->rank_by != "ppl") {
      return FieldError("quant-search.rank_by", e->value,
                        "must be fdt75, dppl or ppl, got " + Quoted(spec->rank_by));
    }
  }
  if (const Entry* e = Find(entries, "method")) {
    ASSIGN_OR_RETURN(std::string text, ReadNonEmptyString(e->value, "quant-search.method"));
    StatusOr<CompressionMethod> method = ParseCompressionMethod(text);
    if (!method.ok()) return FieldError("quant-search.method", e->value, method.status().message());
    spec->search_method = method->ToString();
  }
  if (const Entry* e = Find(entries, "beam")) {
    ASSIGN_OR_RETURN(spec->beam_width, ReadInt(e->value, "quant-search.beam", 1, kMaxCount));
  }
  if (const Entry* e = Find(entries, "depth")) {
    // 0 = all components; the upper bound needs the model and is checked by SelectComponents' caller.
    ASSIGN_OR_RETURN(spec->depth, ReadInt(e->value, "quant-search.depth", 0, kMaxCount));
  }
  if (const Entry* components = Find(entries, "components")) {
    ASSIGN_OR_RETURN(auto globs, ReadStringList(components->value, "quant-search.components"));
    for (auto& glob : globs) spec->components.push_back(std::move(glob.first));
  }
  return OkStatus();
}

// The fields a sparsify-round and a sparsify run share: allocation, previous, components, probe_at.
Status ParseAllocationFields(const Entries& entries, const std::string& section, JobSpec* spec) {
  if (const Entry* e = Find(entries, "allocation")) {
    ASSIGN_OR_RETURN(std::string name, ReadString(e->value, section + ".allocation"));
    if (name != "balanced" && name != "uniform") {
      return FieldError(section + ".allocation", e->value, "must be balanced or uniform, got " + Quoted(name));
    }
    spec->uniform_allocation = name == "uniform";
  }
  if (const Entry* e = Find(entries, "previous")) {
    ASSIGN_OR_RETURN(spec->previous, ReadNonEmptyString(e->value, section + ".previous"));
  }
  if (const Entry* components = Find(entries, "components")) {
    ASSIGN_OR_RETURN(auto globs, ReadStringList(components->value, section + ".components"));
    for (auto& glob : globs) spec->components.push_back(std::move(glob.first));
  }
  if (const Entry* e = Find(entries, "probe_at")) {
    if (!e->value.IsSequence() || e->value.size() == 0 || e->value.size() > 8) {
      return FieldError(section + ".probe_at", e->value, "must list 1 to 8 multiples of the step, e.g. [0.5, 1.5]");
    }
    ASSIGN_OR_RETURN(auto items, ReadStringList(e->value, section + ".probe_at"));
    std::vector<double> multiples;
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string field = section + ".probe_at[" + std::to_string(i) + "]";
      ASSIGN_OR_RETURN(double multiple, ReadDouble(items[i].second, field));
      // Beyond 4 steps a probe says little about the step's own neighbourhood, and a list of many
      // multiplies the round's tasks; both are more likely a typo than a plan.
      if (!(multiple > 0 && multiple <= 4)) {
        return FieldError(field, items[i].second,
                          "must be a multiple of the step in (0, 4], got " + Quoted(items[i].first));
      }
      if (!multiples.empty() && multiple <= multiples.back()) {
        return FieldError(field, items[i].second, "must be larger than the one before (ascending, no repeats)");
      }
      multiples.push_back(multiple);
    }
    spec->probe_multiples = std::move(multiples);
  }
  return OkStatus();
}

Status ParseSparsifyRoundSection(const YAML::Node& section, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(section, "sparsify-round"));
  RETURN_IF_ERROR(
      CheckKnownKeys(entries, "sparsify-round", {"step", "allocation", "previous", "components", "probe_at"}));
  const Entry* step = Find(entries, "step");
  if (step == nullptr) {
    return FieldError("sparsify-round.step", section,
                      "missing; the increase of the average sparsity this round, e.g. 0.1 for 10%");
  }
  ASSIGN_OR_RETURN(spec->step, ReadDouble(step->value, "sparsify-round.step"));
  if (!(spec->step > 0 && spec->step < 1)) {
    return FieldError("sparsify-round.step", step->value,
                      "must be a fraction in (0, 1) (0.1 = 10%), got " + Quoted(step->value.Scalar()));
  }
  return ParseAllocationFields(entries, "sparsify-round", spec);
}

// SPEC "Sparsification run". The schedule's sum with the starting sparsity is checked again once
// the model (and `previous`) is known.
Status ParseSparsifySection(const YAML::Node& section, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(section, "sparsify"));
  RETURN_IF_ERROR(CheckKnownKeys(entries, "sparsify",
                                 {"schedule", "allocation", "previous", "components", "probe_at", "output"}));
  const Entry* output = Find(entries, "output");
  if (output == nullptr) {
    return FieldError("sparsify.output", section,
                      "missing; a new folder for the rounds' models (round-1/ ... final/), on storage the workers share");
  }
  ASSIGN_OR_RETURN(spec->sparsify_output, ReadNonEmptyString(output->value, "sparsify.output"));
  spec->schedule = {0.20, 0.15, 0.10, 0.10, 0.05, 0.05, 0.05, 0.05};  // the paper's, 75 % in all
  if (const Entry* e = Find(entries, "schedule")) {
    if (!e->value.IsSequence() || e->value.size() == 0 || e->value.size() > 64) {
      return FieldError("sparsify.schedule", e->value, "must list 1 to 64 steps, e.g. [0.2, 0.15, 0.1]");
    }
    ASSIGN_OR_RETURN(auto items, ReadStringList(e->value, "sparsify.schedule"));
    spec->schedule.clear();
    double sum = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      const std::string field = "sparsify.schedule[" + std::to_string(i) + "]";
      ASSIGN_OR_RETURN(double step, ReadDouble(items[i].second, field));
      if (!(step > 0 && step < 1)) {
        return FieldError(field, items[i].second, "must be a fraction in (0, 1) (0.1 = 10%), got " + Quoted(items[i].first));
      }
      sum += step;
      spec->schedule.push_back(step);
    }
    if (!(sum < 1)) {
      char percent[32];
      std::snprintf(percent, sizeof percent, "%.6g%%", sum * 100);
      return FieldError("sparsify.schedule", e->value,
                        std::string("sums to ") + percent + "; a run must end below 100% sparsity");
    }
  }
  return ParseAllocationFields(entries, "sparsify", spec);
}

Status ParseCalibrationSection(const YAML::Node& section, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(section, "calibration"));
  RETURN_IF_ERROR(CheckKnownKeys(entries, "calibration", {"probes", "count", "seq_len"}));
  const Entry* probes = Find(entries, "probes");
  if (probes == nullptr) {
    return FieldError("calibration.probes", section,
                      "missing; a probe or baseline file whose rows are the calibration sequences");
  }
  ASSIGN_OR_RETURN(spec->calibration, ReadNonEmptyString(probes->value, "calibration.probes"));
  if (const Entry* e = Find(entries, "count")) {
    ASSIGN_OR_RETURN(spec->calibration_count, ReadInt(e->value, "calibration.count", 1, kMaxCount));
  }
  if (const Entry* e = Find(entries, "seq_len")) {
    ASSIGN_OR_RETURN(spec->calibration_seq_len, ReadInt(e->value, "calibration.seq_len", 1, kMaxCount));
  }
  if (spec->calibration_count > kMaxCalibrationTokens / spec->calibration_seq_len) {
    return FieldError("calibration", section,
                      std::to_string(spec->calibration_count) + " x " + std::to_string(spec->calibration_seq_len) +
                          " tokens is more than a calibration set may hold (" +
                          std::to_string(kMaxCalibrationTokens) + ")");
  }
  return OkStatus();
}

Status ParsePplSection(const YAML::Node& section, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(section, "ppl"));
  RETURN_IF_ERROR(CheckKnownKeys(entries, "ppl", {"text", "window", "join", "shard_size"}));
  const Entry* text = Find(entries, "text");
  if (text == nullptr) {
    return FieldError("ppl.text", section, "missing; a raw text file (.gz ok), e.g. Wikitext-2's wiki.test.raw");
  }
  ASSIGN_OR_RETURN(spec->ppl_text, ReadNonEmptyString(text->value, "ppl.text"));
  if (const Entry* e = Find(entries, "window")) {
    // The worker checks it against the model's context (max_position_embeddings).
    ASSIGN_OR_RETURN(spec->ppl_window, ReadInt(e->value, "ppl.window", 2, kMaxCount));
  }
  if (const Entry* e = Find(entries, "join")) {
    ASSIGN_OR_RETURN(spec->ppl_join, ReadString(e->value, "ppl.join"));
    if (spec->ppl_join != "rows" && spec->ppl_join != "as-is") {
      return FieldError("ppl.join", e->value, "must be rows or as-is, got " + Quoted(spec->ppl_join));
    }
  }
  if (const Entry* e = Find(entries, "shard_size")) {
    ASSIGN_OR_RETURN(spec->ppl_shard_size, ReadInt(e->value, "ppl.shard_size", 1, kMaxCount));
  }
  return OkStatus();
}

// A sparsify run's `train:` is every round's training: each round sets the output, checkpoint folder,
// prune targets and remask itself.
Status ParseTrainSection(const YAML::Node& section, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(section, "train"));
  const bool per_round = spec->kind == JobKind::kSparsify;
  if (per_round) {
    for (const char* key : {"output", "checkpoint_dir", "prune", "remask"}) {
      if (const Entry* e = Find(entries, key)) {
        return FieldError(std::string("train.") + key, e->key,
                          "is set by each round of a sparsify run (under sparsify.output); leave it out");
      }
    }
  }
  RETURN_IF_ERROR(CheckKnownKeys(entries, "train",
                                 {"data", "format", "output", "checkpoint_dir", "phases", "batch", "micro_batch",
                                  "seq_len", "max_sequences", "lr", "warmup", "schedule", "weight_decay", "clip",
                                  "seed", "workers", "checkpoint_every", "shard_optimizer", "timeout_seconds",
                                  "activation_checkpointing", "prune", "remask"}));
  TrainSpec& t = spec->train;
  const Entry* data = Find(entries, "data");
  if (data == nullptr) {
    return FieldError("train.data", section, "missing; the training text (C4-style JSON lines with \"text\", or raw text)");
  }
  ASSIGN_OR_RETURN(t.data, ReadNonEmptyString(data->value, "train.data"));
  const Entry* output = Find(entries, "output");
  if (output != nullptr) {
    ASSIGN_OR_RETURN(t.output, ReadNonEmptyString(output->value, "train.output"));
  } else if (!per_round) {
    return FieldError("train.output", section, "missing; a new folder for the trained model, on storage the workers share");
  }
  if (const Entry* e = Find(entries, "format")) {
    ASSIGN_OR_RETURN(t.data_format, ReadString(e->value, "train.format"));
    if (t.data_format != "auto" && t.data_format != "jsonl" && t.data_format != "text") {
      return FieldError("train.format", e->value, "must be auto, jsonl or text, got " + Quoted(t.data_format));
    }
  }
  if (const Entry* e = Find(entries, "checkpoint_dir")) {
    ASSIGN_OR_RETURN(t.checkpoint_dir, ReadNonEmptyString(e->value, "train.checkpoint_dir"));
  }
  if (const Entry* e = Find(entries, "phases")) {
    ASSIGN_OR_RETURN(t.phases, ReadNonEmptyString(e->value, "train.phases"));
    StatusOr<std::vector<TrainingPhase>> phases = ParseTrainingPhases(t.phases);
    if (!phases.ok()) return FieldError("train.phases", e->value, phases.status().message());
    if (TotalSteps(*phases) > kMaxCount) return FieldError("train.phases", e->value, "too many steps");
  }
  if (const Entry* e = Find(entries, "prune")) {
    ASSIGN_OR_RETURN(std::string text, ReadNonEmptyString(e->value, "train.prune"));
    StatusOr<CompressionConfig> config = ParsePruneTargets(text, kSyntaxCheckLayers);
    if (!config.ok()) return FieldError("train.prune", e->value, config.status().message());
    t.prune = config->Canonical();
  }
  auto read_count = [&](const char* key, int64_t min, int64_t* out) -> Status {
    if (const Entry* e = Find(entries, key)) {
      ASSIGN_OR_RETURN(*out, ReadInt(e->value, std::string("train.") + key, min, kMaxCount));
    }
    return OkStatus();
  };
  RETURN_IF_ERROR(read_count("batch", 1, &t.batch));
  RETURN_IF_ERROR(read_count("micro_batch", 0, &t.micro_batch));
  RETURN_IF_ERROR(read_count("seq_len", 1, &t.seq_len));
  RETURN_IF_ERROR(read_count("max_sequences", 0, &t.max_sequences));
  RETURN_IF_ERROR(read_count("warmup", 0, &t.warmup));
  RETURN_IF_ERROR(read_count("seed", 0, &t.seed));
  RETURN_IF_ERROR(read_count("checkpoint_every", 0, &t.checkpoint_every));
  RETURN_IF_ERROR(read_count("timeout_seconds", 1, &t.timeout_seconds));
  if (const Entry* e = Find(entries, "workers")) {
    // A gang's members are workers the coordinator holds idle until all have come: keep it sane.
    ASSIGN_OR_RETURN(t.workers, ReadInt(e->value, "train.workers", 1, 4096));
  }
  auto read_number = [&](const char* key, double* out) -> Status {
    if (const Entry* e = Find(entries, key)) {
      ASSIGN_OR_RETURN(*out, ReadDouble(e->value, std::string("train.") + key));
      if (*out < 0) return FieldError(std::string("train.") + key, e->value, "must not be negative");
    }
    return OkStatus();
  };
  RETURN_IF_ERROR(read_number("lr", &t.learning_rate));
  RETURN_IF_ERROR(read_number("weight_decay", &t.weight_decay));
  RETURN_IF_ERROR(read_number("clip", &t.clip));
  if (!(t.learning_rate > 0)) return FieldError("train.lr", section, "must be positive");
  if (const Entry* e = Find(entries, "schedule")) {
    ASSIGN_OR_RETURN(t.schedule, ReadString(e->value, "train.schedule"));
    if (t.schedule != "constant" && t.schedule != "cosine") {
      return FieldError("train.schedule", e->value, "must be constant or cosine, got " + Quoted(t.schedule));
    }
  }
  if (const Entry* e = Find(entries, "shard_optimizer")) {
    ASSIGN_OR_RETURN(t.shard_optimizer, ReadBool(e->value, "train.shard_optimizer"));
    if (t.shard_optimizer && t.workers < 2) {
      return FieldError("train.shard_optimizer", e->value, "shards AdamW's state across a gang: needs workers of 2 or more");
    }
  }
  if (const Entry* e = Find(entries, "remask")) {
    ASSIGN_OR_RETURN(t.remask, ReadBool(e->value, "train.remask"));
  }
  if (const Entry* e = Find(entries, "activation_checkpointing")) {
    ASSIGN_OR_RETURN(t.activation_checkpointing, ReadBool(e->value, "train.activation_checkpointing"));
  }
  // What the trainer would refuse after the gang has formed: better now, naming the field.
  if (t.batch % t.workers != 0) {
    return FieldError("train.batch", section, "(" + std::to_string(t.batch) + ") must divide among the " +
                                                  std::to_string(t.workers) + " workers");
  }
  const int64_t share = t.batch / t.workers;
  if (t.micro_batch > 0 && share % t.micro_batch != 0) {
    return FieldError("train.micro_batch", section, "(" + std::to_string(t.micro_batch) +
                                                        ") must divide each worker's share of the batch (" +
                                                        std::to_string(share) + ")");
  }
  return OkStatus();
}

Status ParseTopLevel(const YAML::Node& root, JobSpec* spec) {
  ASSIGN_OR_RETURN(Entries entries, ReadMapping(root, ""));

  // The kind first: it decides which section is allowed, and an unsupported kind should say so rather
  // than complain about its section.
  const Entry* kind = Find(entries, "kind");
  if (kind == nullptr)
    return InvalidArgumentError(std::string("job spec: kind: missing; expected one of ") + kKindList);
  ASSIGN_OR_RETURN(std::string kind_name, ReadString(kind->value, "kind"));
  StatusOr<JobKind> parsed_kind = ParseJobKind(kind_name);
  if (!parsed_kind.ok()) return FieldError("kind", kind->value, parsed_kind.status().message());
  spec->kind = *parsed_kind;

  std::vector<std::string> allowed = kTopLevelFields;
  for (const char* section : kSectionKinds) allowed.push_back(section);
  RETURN_IF_ERROR(CheckKnownKeys(entries, "", allowed));

  const Entry* model = Find(entries, "model");
  if (model == nullptr)
    return InvalidArgumentError("job spec: model: missing; the model folder as the workers see it");
  ASSIGN_OR_RETURN(spec->model, ReadNonEmptyString(model->value, "model"));
  if (spec->kind == JobKind::kTrain) {
    for (const std::string& field : kProbeFields) {
      if (const Entry* e = Find(entries, field)) {
        return FieldError(field, e->key, "does not apply to kind train (it evaluates no probes); leave it out");
      }
    }
  } else {
    const Entry* probes = Find(entries, "probes");
    if (probes == nullptr)
      return InvalidArgumentError("job spec: probes: missing; the probe file (JSON lines)");
    ASSIGN_OR_RETURN(spec->probes, ReadNonEmptyString(probes->value, "probes"));
  }

  if (const Entry* e = Find(entries, "name")) {
    ASSIGN_OR_RETURN(spec->name, ReadString(e->value, "name"));
    // Names are listed with every job (ListJobs): they stay short.
    if (spec->name.size() > kMaxNameBytes) {
      return FieldError("name", e->value,
                        "is " + std::to_string(spec->name.size()) + " bytes; at most " + std::to_string(kMaxNameBytes));
    }
  }
  if (const Entry* e = Find(entries, "dtype")) {
    ASSIGN_OR_RETURN(spec->dtype, ReadString(e->value, "dtype"));
    if (spec->dtype != "float32" && spec->dtype != "float16" && spec->dtype != "bfloat16") {
      return FieldError("dtype", e->value,
                        std::string("must be one of ") + kDtypeList + ", got " + Quoted(spec->dtype));
    }
  }
  if (const Entry* e = Find(entries, "num_probes")) {
    ASSIGN_OR_RETURN(spec->num_probes, ReadInt(e->value, "num_probes", 0, kMaxCount));
  }
  if (const Entry* e = Find(entries, "prefix")) {
    ASSIGN_OR_RETURN(spec->prefix_len, ReadInt(e->value, "prefix", 1, kMaxCount));
  }
  if (const Entry* e = Find(entries, "completion")) {
    ASSIGN_OR_RETURN(spec->completion_len, ReadInt(e->value, "completion", 1, kMaxCount));
  }
  if (const Entry* e = Find(entries, "shard_size")) {
    ASSIGN_OR_RETURN(spec->shard_size, ReadInt(e->value, "shard_size", 1, kMaxCount));
  }
  if (const Entry* e = Find(entries, "priority")) {
    ASSIGN_OR_RETURN(int64_t priority, ReadInt(e->value, "priority", std::numeric_limits<int32_t>::min(),
                                               std::numeric_limits<int32_t>::max()));
    spec->priority = static_cast<int>(priority);
  }
  if (const Entry* e = Find(entries, "noise_floor")) {
    ASSIGN_OR_RETURN(spec->noise_floor, ReadBool(e->value, "noise_floor"));
  }
  if (const Entry* e = Find(entries, "reference")) {
    ASSIGN_OR_RETURN(spec->reference, ReadNonEmptyString(e->value, "reference"));
    // SPEC's round measures each probe against the current model, so that its curves start at the
    // completion length (the balance assumes it): another model's baseline would break that.
    if (spec->kind == JobKind::kSparsifyRound || spec->kind == JobKind::kSparsify) {
      return FieldError("reference", e->key,
                        "a sparsify-round measures against its own model (SPEC \"Balanced sparsification "
                        "round\"); leave it out");
    }
  }
  if (const Entry* e = Find(entries, "calibration")) RETURN_IF_ERROR(ParseCalibrationSection(e->value, spec));
  if (const Entry* e = Find(entries, "ppl")) RETURN_IF_ERROR(ParsePplSection(e->value, spec));

  // Exactly the kind's own section (and a sparsify run's training settings).
  const std::string own = JobKindName(spec->kind);
  for (const char* other : kSectionKinds) {
    const Entry* e = Find(entries, other);
    const bool rounds_train = spec->kind == JobKind::kSparsify && std::string(other) == "train";
    if (e != nullptr && other != own && !rounds_train) {
      return FieldError(other, e->key, "section does not match kind '" + own + "'");
    }
  }
  const Entry* section = Find(entries, own);
  if (section == nullptr) {
    return InvalidArgumentError("job spec: " + own + ": missing; kind '" + own + "' needs its `" + own +
                                ":` section (docs/job-spec.md)");
  }
  switch (spec->kind) {
    case JobKind::kEvaluate:
      return ParseEvaluateSection(section->value, spec);
    case JobKind::kProbe:
      return ParseProbeSection(section->value, spec);
    case JobKind::kQuantSearch:
      return ParseQuantSearchSection(section->value, spec);
    case JobKind::kSparsifyRound:
      return ParseSparsifyRoundSection(section->value, spec);
    case JobKind::kTrain:
      return ParseTrainSection(section->value, spec);
    case JobKind::kSparsify: {
      const Entry* train = Find(entries, "train");
      if (train == nullptr) {
        return InvalidArgumentError("job spec: train: missing; a sparsify run trains after every round "
                                    "(`train:` with at least `data`, docs/job-spec.md)");
      }
      RETURN_IF_ERROR(ParseSparsifySection(section->value, spec));
      return ParseTrainSection(train->value, spec);
    }
  }
  return OkStatus();
}

StatusOr<std::vector<std::string>> ExpandEvaluate(const JobSpec& spec, int num_layers) {
  std::vector<std::string> out;
  for (size_t i = 0; i < spec.configs.size(); ++i) {
    StatusOr<CompressionConfig> config = ParseCompressionConfig(spec.configs[i], num_layers);
    if (!config.ok()) {
      return InvalidArgumentError("job spec: evaluate.configs[" + std::to_string(i) + "] " +
                                  Quoted(spec.configs[i]) + ": " + Bounded(config.status().message(), 500));
    }
    out.push_back(config->Canonical());
  }
  if (out.empty()) out.push_back("");  // with a reference (ParseJobSpec): the model as it is
  return out;
}

StatusOr<std::vector<std::string>> ExpandProbe(const JobSpec& spec, int num_layers) {
  ASSIGN_OR_RETURN(std::vector<std::string> selected,
                   SelectComponents(spec.components, num_layers, "probe.components"));
  std::vector<std::string> out;
  for (size_t m = 0; m < spec.methods.size(); ++m) {
    StatusOr<CompressionMethod> method = ParseCompressionMethod(spec.methods[m]);
    if (!method.ok()) {
      return InvalidArgumentError("job spec: probe.methods[" + std::to_string(m) +
                                  "]: " + method.status().message());
    }
    for (const std::string& component : selected) out.push_back(component + "=" + method->ToString());
  }
  return out;
}

}  // namespace

StatusOr<std::vector<std::string>> SelectComponents(const std::vector<std::string>& globs, int num_layers,
                                                    const std::string& field) {
  const std::vector<ComponentId> all = AllComponents(num_layers);
  std::vector<bool> selected(all.size(), globs.empty());
  for (size_t g = 0; g < globs.size(); ++g) {
    bool any = false;
    for (size_t c = 0; c < all.size(); ++c) {
      if (fnmatch(globs[g].c_str(), all[c].Name().c_str(), 0) == 0) selected[c] = any = true;
    }
    if (!any) {
      return InvalidArgumentError("job spec: " + field + "[" + std::to_string(g) + "] " + Quoted(globs[g]) +
                                  ": matches no component of a model with " + std::to_string(num_layers) +
                                  " layers (names look like model.layers.0.self_attn.q_proj)");
    }
  }
  std::vector<std::string> names;
  for (size_t c = 0; c < all.size(); ++c) {
    if (selected[c]) names.push_back(all[c].Name());
  }
  return names;
}

std::string JobKindName(JobKind kind) { return kKindNames[static_cast<int>(kind)]; }

StatusOr<JobKind> ParseJobKind(std::string_view name) {
  for (int k = 0; k < static_cast<int>(std::size(kKindNames)); ++k) {
    if (name == kKindNames[k]) return static_cast<JobKind>(k);
  }
  return InvalidArgumentError("unknown kind " + Quoted(name) + "; expected one of " + kKindList);
}

dtm::v1::JobKind ToProto(JobKind kind) {
  switch (kind) {
    case JobKind::kEvaluate:
      return dtm::v1::JOB_KIND_EVALUATE;
    case JobKind::kProbe:
      return dtm::v1::JOB_KIND_PROBE;
    case JobKind::kQuantSearch:
      return dtm::v1::JOB_KIND_QUANT_SEARCH;
    case JobKind::kSparsifyRound:
      return dtm::v1::JOB_KIND_SPARSIFY_ROUND;
    case JobKind::kTrain:
      return dtm::v1::JOB_KIND_TRAIN;
    case JobKind::kSparsify:
      return dtm::v1::JOB_KIND_SPARSIFY;
  }
  return dtm::v1::JOB_KIND_UNSPECIFIED;
}

dtm::v1::Dtype DtypeToProto(std::string_view dtype) {
  if (dtype == "float32") return dtm::v1::DTYPE_F32;
  if (dtype == "float16") return dtm::v1::DTYPE_F16;
  if (dtype == "bfloat16") return dtm::v1::DTYPE_BF16;
  return dtm::v1::DTYPE_UNSPECIFIED;
}

StatusOr<JobSpec> ParseJobSpec(const std::string& yaml_text) {
  // yaml-cpp reports everything by exception; none may escape to a gRPC handler.
  try {
    // The documents are counted with the event parser, not YAML::LoadAll: on some input (a lone
    // ",") yaml-cpp 0.7's LoadAll never returns and allocates without bound (yaml-cpp issue #1040,
    // found by fuzz/job_spec_fuzzer), and a submission must not be able to do that to the
    // coordinator. Two documents are enough to refuse the spec.
    std::istringstream stream(yaml_text);
    YAML::Parser parser(stream);
    DocumentStarts starts;
    for (int i = 0; i < 2 && starts.marks.size() < 2 && parser.HandleNextDocument(starts); ++i) {
    }
    if (starts.marks.size() > 1) {
      return InvalidArgumentError("job spec: holds more than one YAML document (the second on line " +
                                  std::to_string(starts.marks[1].line + 1) + "); expected one");
    }
    const YAML::Node doc = YAML::Load(yaml_text);
    if (!doc.IsDefined() || doc.IsNull()) {
      return InvalidArgumentError("job spec: empty; expected a mapping with at least kind, model and probes");
    }
    if (!doc.IsMap()) return FieldError("top level", doc, "must be a mapping of fields, got " + Describe(doc));
    JobSpec spec;
    RETURN_IF_ERROR(ParseTopLevel(doc, &spec));
    if (spec.calibration.empty() && SpecUsesGptq(spec)) {
      // Never a silent default: the calibration set is part of every gptq result (SPEC, gptq).
      return InvalidArgumentError(
          "job spec: calibration: missing; gptq needs a calibration set, e.g. `calibration: {probes: "
          "calib.jsonl, count: 128, seq_len: 2048}` (rows of at least seq_len tokens)");
    }
    if (spec.rank_by == "ppl" && spec.ppl_text.empty()) {
      return InvalidArgumentError(
          "job spec: quant-search.rank_by: ppl ranks every node by the ground-truth perplexity of the "
          "job's `ppl:` text, which is missing, e.g. `ppl: {text: wiki.test.raw, window: 2048}`");
    }
    if (spec.racing.enabled && spec.rank_by != "fdt75") {
      return InvalidArgumentError("job spec: quant-search.racing: a race bounds fdt75, and this search ranks by " +
                                  spec.rank_by + "; drop racing or rank by fdt75");
    }
    if (spec.racing.enabled && !spec.ppl_text.empty()) {
      return InvalidArgumentError(
          "job spec: racing with ppl: a race evaluates configs on part of the probes, and ppl's windows would "
          "still run for every config in full; drop one of them");
    }
    return spec;
  } catch (const YAML::Exception& e) {
    if (e.mark.is_null()) return InvalidArgumentError("job spec: malformed YAML: " + e.msg);
    return InvalidArgumentError("job spec: malformed YAML at line " + std::to_string(e.mark.line + 1) +
                                ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
}

bool SpecUsesGptq(const JobSpec& spec) {
  auto is_gptq = [](const std::string& method) { return method.rfind("gptq:", 0) == 0; };
  switch (spec.kind) {
    case JobKind::kEvaluate:
      return std::any_of(spec.configs.begin(), spec.configs.end(),
                         [](const std::string& config) { return ConfigUsesGptq(config); });
    case JobKind::kProbe:
      return std::any_of(spec.methods.begin(), spec.methods.end(), is_gptq);
    case JobKind::kQuantSearch:
      return is_gptq(spec.search_method);
    case JobKind::kSparsifyRound:
    case JobKind::kSparsify:
      return false;  // magnitude pruning only
    case JobKind::kTrain:
      return false;
  }
  return false;
}

StatusOr<std::vector<std::string>> ExpandConfigs(const JobSpec& spec, int num_layers) {
  if (num_layers < 1) {
    return InvalidArgumentError("job spec: the model has " + std::to_string(num_layers) +
                                " layers; expected at least 1");
  }
  std::vector<std::string> configs;
  switch (spec.kind) {
    case JobKind::kEvaluate: {
      ASSIGN_OR_RETURN(configs, ExpandEvaluate(spec, num_layers));
      break;
    }
    case JobKind::kProbe: {
      ASSIGN_OR_RETURN(configs, ExpandProbe(spec, num_layers));
      break;
    }
    default:
      return InvalidArgumentError("job spec: kind: '" + JobKindName(spec.kind) +
                                  "' has no fixed list of configs; its driver chooses them stage by stage");
  }
  // Equal configs share one cache key anyway; evaluating and reporting one twice would only confuse.
  std::vector<std::string> unique;
  std::unordered_set<std::string> seen;
  for (std::string& c : configs) {
    if (seen.insert(c).second) unique.push_back(std::move(c));
  }
  return unique;
}

}  // namespace dtm
