// Compression configs: which component is compressed by which method, as users and caches write it.
//
// Syntax (SPEC "Compression of one component"): `COMPONENT=METHOD[,COMPONENT=METHOD...]`, e.g.
// "model.layers.0.mlp.up_proj=gptq:4:g128,model.layers.3.self_attn.q_proj=prune:0.5". The canonical
// form, sorted by component name, is what gets hashed, so equal configs have equal cache keys.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/components.h"
#include "common/status.h"

namespace dtm {

enum class MethodKind { kPrune, kRandomPrune, kInt8AbsMax, kInt8AbsMaxRow, kLlmInt8, kGptq };

// One method of SPEC's table with its parameters; fields that a kind does not use stay 0.
struct CompressionMethod {
  MethodKind kind = MethodKind::kPrune;
  double fraction = 0;  // prune, random-prune: in [0, 1]
  uint64_t seed = 0;    // random-prune
  int bits = 0;         // gptq: 2, 3, 4 or 8
  int group_size = 0;   // gptq: 0 = one group per row

  // Canonical text: "prune:0.5", "random-prune:0.1:7", "int8-absmax", "int8-absmax-row", "llm-int8",
  // "gptq:4", "gptq:4:g128". Fractions in the shortest form that parses back to the same double.
  std::string ToString() const;

  bool operator==(const CompressionMethod& o) const {
    return kind == o.kind && fraction == o.fraction && seed == o.seed && bits == o.bits &&
           group_size == o.group_size;
  }
  bool operator!=(const CompressionMethod& o) const { return !(*this == o); }
};

// Parses one method ("prune:0.5", "gptq:4:g128", ...). The error quotes the text.
StatusOr<CompressionMethod> ParseCompressionMethod(std::string_view text);

struct CompressionConfig {
  // Sorted by component name (lexicographic on the string), each component at most once.
  std::vector<std::pair<ComponentId, CompressionMethod>> entries;

  // "comp=method,comp=method" in entry order; "" for the uncompressed model.
  std::string Canonical() const;
  bool empty() const { return entries.empty(); }

  bool operator==(const CompressionConfig& o) const { return entries == o.entries; }
  bool operator!=(const CompressionConfig& o) const { return !(*this == o); }
};

// Parses a config for a model with `num_layers` layers. Whitespace around items, names and methods is
// tolerated; an empty (or all-blank) string is the empty config. Rejects unknown components, unknown
// methods, bad parameters, a component named twice, items without '=' and empty items; every error
// quotes the offending item.
StatusOr<CompressionConfig> ParseCompressionConfig(std::string_view text, int num_layers);

// ParseCompressionConfig for a config of magnitude pruning only (`prune:F` on each component): the
// masks a training run holds (SPEC "Sparsification run"). Its errors, and for another method
// "COMPONENT=METHOD: training prunes by magnitude only (prune:F)", are INVALID_ARGUMENT.
StatusOr<CompressionConfig> ParsePruneTargets(std::string_view text, int num_layers);

// Whether a canonical config (CompressionConfig::ToString) holds a gptq component, so that its
// results depend on a calibration set. Canonical text only: no spaces, methods as ToString writes them.
bool ConfigUsesGptq(std::string_view canonical_config);

}  // namespace dtm
