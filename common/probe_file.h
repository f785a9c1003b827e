// Probe sets and the probe files other tools share (SPEC "Probes, baseline and metrics").
//
// A probe file is JSON lines (gzipped when the name ends in .gz), one object per probe:
// {"id": "...", "tokens": [prefix ids]}. Free of libtorch: the coordinator reads probe files too.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/jsonl.h"
#include "common/status.h"

namespace dtm {

struct Probe {
  std::string id;
  std::vector<int32_t> tokens;
};

struct ProbeSet {
  std::vector<Probe> probes;
  // SHA-256 over every probe's id and tokens, in order: the probe set's identity in cache keys.
  std::string Fingerprint() const;
};

// Errors name the file and the probe's 1-based number, never its content when `limits` says so.
StatusOr<ProbeSet> ReadProbeFile(const std::string& path, const ReadLimits& limits = {});
Status WriteProbeFile(const std::string& path, const ProbeSet& probes);

}  // namespace dtm
