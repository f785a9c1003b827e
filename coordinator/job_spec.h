// Job specs: the YAML a user submits (docs/job-spec.md), parsed and validated without the model.
//
// ParseJobSpec checks everything that does not need the model (syntax, types, bounds, config and
// method syntax); ExpandConfigs turns a spec into the configs to evaluate once the model's layer count
// is known. The coordinator stores the YAML text itself: JobSpec is not serialized anywhere.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "dtm/v1/common.pb.h"
#include "dtm/v1/job.pb.h"

namespace dtm {

enum class JobKind { kEvaluate, kProbe, kQuantSearch, kSparsifyRound, kTrain, kSparsify };

// "evaluate", "probe", "quant-search", "sparsify-round", "train", "sparsify": the YAML `kind` values.
std::string JobKindName(JobKind kind);
// The inverse of JobKindName; exact names only. The error lists the valid names.
StatusOr<JobKind> ParseJobKind(std::string_view name);
dtm::v1::JobKind ToProto(JobKind kind);

// "" -> DTYPE_UNSPECIFIED, "float32" -> DTYPE_F32, "float16" -> DTYPE_F16, "bfloat16" -> DTYPE_BF16;
// anything else -> DTYPE_UNSPECIFIED (ParseJobSpec admits only these names).
dtm::v1::Dtype DtypeToProto(std::string_view dtype);

// `train:` (SPEC "Recovery training"; worker/engine/recovery_trainer.h says what each setting does):
// a gang of `workers` workers serving `model` trains it on `data` and writes the result to `output`.
// Paths are on storage every worker of the gang and the coordinator share.
struct TrainSpec {
  std::string data;                 // JSON lines with "text" (C4) or raw text, .gz accepted
  std::string data_format = "auto";  // auto, jsonl or text
  std::string output;               // the trained model's folder: must not exist, or be empty (sparsify: "")
  std::string checkpoint_dir;       // "" = OUTPUT.checkpoints (beside the output)
  std::string phases = "masked:450,unmasked:50";
  std::string prune;                // canonical "COMPONENT=prune:F,...": pruned by magnitude first; "" = none
  bool remask = false;              // the masked weights back at 0 after the last step
  int64_t batch = 256;              // sequences per optimizer step, over the gang
  int64_t micro_batch = 0;          // per forward/backward; 0 = a member's whole share
  int64_t seq_len = 2048;
  int64_t max_sequences = 0;        // 0 = the whole file
  double learning_rate = 1e-4;
  int64_t warmup = 0;
  std::string schedule = "constant";  // constant or cosine
  double weight_decay = 0.01;
  double clip = 1.0;                // 0 = no clipping
  int64_t seed = 0;
  int64_t workers = 1;              // the gang's size
  int64_t checkpoint_every = 50;    // steps; what a re-leased gang resumes from
  bool shard_optimizer = false;     // ZeRO-1 (needs workers >= 2)
  bool activation_checkpointing = false;  // per decoder layer: less memory, more compute
  int64_t timeout_seconds = 300;    // a collective waiting longer ends the gang's attempt
};

// `racing:` in probe and quant-search (docs/job-spec.md; coordinator/racing.h says how a race runs).
struct RacingSpec {
  bool enabled = false;
  int64_t keep = 0;           // probe: the places decided (the best `keep` configs by fdt75); search: its beam
  int64_t first = 100;        // probes every candidate sees first
  int64_t step = 100;         // probes added to each survivor per round
  double confidence = 0.95;   // each bound's
  double epsilon = 0;         // indifference zone, FDT tokens (racing.h)
};

struct JobSpec {
  std::string name;  // optional free text
  JobKind kind = JobKind::kEvaluate;
  std::string model;         // model folder as the workers see it (their --model)
  std::string dtype;         // "" (= whatever the workers serving the model use), float32, float16, bfloat16
  std::string probes;        // probe file path (JSON lines, .gz ok)
  int64_t num_probes = 0;    // 0 = every probe in the file, else the first N
  int64_t prefix_len = 100;  // YAML `prefix`: the first n tokens of each probe are used
  int64_t completion_len = 500;         // YAML `completion`
  int64_t shard_size = 50;              // probes per task
  int priority = 0;                     // lower runs first
  bool noise_floor = true;              // also evaluate the uncompressed model (config "") and report it
  // `reference`: a model folder (as the workers see it) whose greedy completions are the baseline in
  // place of `model`'s; "" = the model's own. With it, config "" (the model as it is) is always
  // evaluated, and the noise floor is the reference's against itself. Not for sparsify-round.
  std::string reference;
  std::vector<std::string> configs;     // evaluate: canonical config strings (SPEC syntax), never ""
  std::vector<std::string> methods;     // probe: canonical method strings (e.g. "int8-absmax", "prune:0.5")
  std::vector<std::string> components;  // probe, quant-search: fnmatch globs over component names; empty = all
  // quant-search (SPEC "Quantization tree search")
  std::string search_method = "int8-absmax";  // canonical method applied to every component of a node
  int64_t beam_width = 10;
  int64_t depth = 0;  // levels below the uncompressed model; 0 = every selected component
  std::string rank_by = "fdt75";  // `rank_by`: fdt75, dppl or ppl (SPEC "Quantization tree search")
  RacingSpec racing;  // probe, quant-search (fdt75 ranking, no `ppl:`)
  // sparsify-round (SPEC "Balanced sparsification round")
  double step = 0;                      // increase of the param-weighted average sparsity, in (0, 1)
  bool uniform_allocation = false;      // `allocation: uniform` (the paper's baseline) vs `balanced`
  std::string previous;                 // the previous round's `dtmctl results --format json`; "" = dense
  // `probe_at`: the extra sparsities probed, as multiples of the step, ascending; SPEC (the paper's
  // step +- step/2): 0.5 and 1.5.
  std::vector<double> probe_multiples = {0.5, 1.5};
  // `calibration:` (SPEC, gptq): required when any method is gptq, else unused.
  std::string calibration;              // probe or baseline file of calibration sequences; "" = none
  int64_t calibration_count = 128;      // its first rows used
  int64_t calibration_seq_len = 2048;   // tokens of each row used
  // `ppl:` (SPEC `ppl`): every config's ground-truth perplexity on a raw text; optional.
  std::string ppl_text;                 // raw text file (.gz ok); "" = no ppl
  int64_t ppl_window = 2048;            // tokens per window
  std::string ppl_join = "rows";        // rows (lines joined by blank lines, the protocol) or as-is
  int64_t ppl_shard_size = 8;           // windows per task
  TrainSpec train;                      // kinds train (its `probes` is then empty) and sparsify
  // sparsify (SPEC "Sparsification run"): each round's step (`schedule`, the paper's by default), the
  // run's folder, and from sparsify-round's fields `uniform_allocation`, `previous` (the starting
  // sparsities), `components` and `probe_multiples`; `train` without output, checkpoint_dir, prune
  // or remask, which each round sets.
  std::vector<double> schedule;
  std::string sparsify_output;
};

// True when some config the spec may evaluate holds a gptq method (its methods, search method or
// configs), so that the job needs `calibration:`.
bool SpecUsesGptq(const JobSpec& spec);

// Parses and validates everything that does not need the model. Errors are INVALID_ARGUMENT and name
// the field and its YAML line, e.g. "job spec: shard_size (line 7): must be at least 1, got 0".
// Malformed YAML gives yaml-cpp's message with line and column; unknown keys, keys given twice and
// missing required fields (kind, model, probes, the kind's section) are errors. A train spec has no
// probes, and the fields about probes (prefix, completion, shard_size, ...) are errors there.
StatusOr<JobSpec> ParseJobSpec(const std::string& yaml_text);

// The configs a job evaluates on a model with `num_layers` layers, in result order, duplicates dropped
// (the first kept):
//   evaluate: spec.configs re-parsed against num_layers; a component beyond the model is an error
//             naming the config;
//   probe:    for each method (spec order), each component (AllComponents order) matched by any of
//             the globs (all when there are none) -> "COMPONENT=METHOD"; a glob that matches no
//             component is an error naming the glob.
// The noise-floor config "" is not included; the caller adds it.
StatusOr<std::vector<std::string>> ExpandConfigs(const JobSpec& spec, int num_layers);

// The components of a model with `num_layers` layers that any of `globs` matches (all when there are
// none), in AllComponents order, as names. A glob that matches nothing is an error naming
// `field`[i] and the glob.
StatusOr<std::vector<std::string>> SelectComponents(const std::vector<std::string>& globs, int num_layers,
                                                    const std::string& field);

}  // namespace dtm
