// Baselines as data: greedy completions of probes, and the baseline files other tools share:
// JSON lines {"id", "prefix_len", "tokens": prefix + completion}, and "model_fingerprint" (the
// checkpoint fingerprint of the model that generated them) on every row where it is known, so that
// a command scoring a model against the file can tell whether it is that model's own baseline.
// Files without it (older files, other tools) read as before. Free of libtorch.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace dtm {

struct BaselineRow {
  std::string id;
  int64_t prefix_len = 0;
  std::vector<int32_t> tokens;  // prefix + completion
  int64_t completion_len() const { return static_cast<int64_t>(tokens.size()) - prefix_len; }
};

struct Baseline {
  std::vector<BaselineRow> rows;
  // Checkpoint::Fingerprint() of the model whose greedy completions these are; empty: unknown.
  // Initialised so that `Baseline{{rows...}}` stays a complete initialiser.
  std::string model_fingerprint = "";
  // SHA-256 over ids, prefix lengths and tokens: the content alone, not model_fingerprint (two
  // models that complete every probe alike have one baseline).
  std::string Fingerprint() const;
};

// INVALID_ARGUMENT naming the row when a row lacks a field, or when rows disagree on
// "model_fingerprint" (some with it, some without, or two values: rows of two baselines).
StatusOr<Baseline> ReadBaselineFile(const std::string& path);
Status WriteBaselineFile(const std::string& path, const Baseline& baseline);

}  // namespace dtm
