// `dtmctl compare --reference A --model B --probes P`: two checkpoints compared as the paper compares
// a compressed model with its original (SPEC "Probes, baseline and metrics"): A's greedy baseline on
// the probes, B's FDT, SDT, NLL and DPPL against it, and A's noise floor (A against its own
// baseline). B is any checkpoint with A's tokenizer, e.g. one written by `dtmctl apply`.
//
// A's baseline is cached: ${XDG_CACHE_HOME:-$HOME/.cache}/dtm/baselines/KEY.jsonl.gz, KEY the
// SHA-256 of A's checkpoint fingerprint, the probe set's fingerprint, n, the completion length M and
// the dtype (what determines a baseline, SPEC), so a second comparison against A on the same probes
// skips the generation. A cached file is used only when it holds exactly these probes completed by
// M tokens and records A's fingerprint; otherwise it is computed again and replaced. The file is an
// ordinary baseline file (`dtmctl eval --baseline` reads it). --cache-dir moves the cache,
// --no-cache neither reads nor writes it.
//
// One model is in memory at a time: A is released before B loads.
#pragma once

#include <cstdint>
#include <string>

#include "cli/engine_commands.h"
#include "common/status.h"

namespace dtm::cli {

struct CompareOptions {
  std::string reference_dir;  // A: the model whose greedy completions are the baseline
  std::string model_dir;      // B: the candidate scored against them
  std::string probes;
  int64_t completion = 500;
  std::string format = "table";  // table | json
  std::string cache_dir;         // empty: ${XDG_CACHE_HOME:-$HOME/.cache}/dtm/baselines
  bool use_cache = true;
  RuntimeOptions runtime;
};
Status CompareCommand(const CompareOptions& options);

// Where the baseline cache is without --cache-dir: $XDG_CACHE_HOME/dtm/baselines when that is an
// absolute path (the XDG spec ignores relative ones), else $HOME/.cache/dtm/baselines; empty when
// neither is set.
std::string DefaultBaselineCacheDir();

}  // namespace dtm::cli
