// Baselines as data: greedy completions of probes, and the baseline files other tools share:
// JSON lines {"id", "prefix_len", "tokens": prefix + completion}. Free of libtorch.
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
  std::string Fingerprint() const;  // SHA-256 over ids, prefix lengths and tokens
};

StatusOr<Baseline> ReadBaselineFile(const std::string& path);
Status WriteBaselineFile(const std::string& path, const Baseline& baseline);

}  // namespace dtm
