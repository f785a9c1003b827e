// Probe and baseline files: JSON lines, gzipped when the input starts with gzip's magic bytes (the
// readers choose by the ".gz" name). What a reader accepts must meet the format's rules and read
// back unchanged once written, since workers and the coordinator pass these files along.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/baseline_file.h"
#include "common/probe_file.h"
#include "temp_input_file.h"

namespace {

void CheckProbes(const dtm::ProbeSet& set) {
  if (set.probes.empty()) std::abort();
  for (const dtm::Probe& p : set.probes) {
    if (p.tokens.empty()) std::abort();
    for (int32_t t : p.tokens) {
      if (t < 0) std::abort();
    }
  }
  static dtm::fuzz::TempInputFile written(".probes.jsonl");
  // The ids came from JSON text, so only I/O can make the write fail; that is not the reader's.
  if (!dtm::WriteProbeFile(written.path(), set).ok()) return;
  dtm::StatusOr<dtm::ProbeSet> again = dtm::ReadProbeFile(written.path());
  if (!again.ok() || again->Fingerprint() != set.Fingerprint()) std::abort();
}

void CheckBaseline(const dtm::Baseline& baseline) {
  if (baseline.rows.empty()) std::abort();
  for (const dtm::BaselineRow& r : baseline.rows) {
    if (r.prefix_len < 1 || r.completion_len() < 1) std::abort();
    for (int32_t t : r.tokens) {
      if (t < 0) std::abort();
    }
  }
  static dtm::fuzz::TempInputFile written(".baseline.jsonl");
  if (!dtm::WriteBaselineFile(written.path(), baseline).ok()) return;
  dtm::StatusOr<dtm::Baseline> again = dtm::ReadBaselineFile(written.path());
  if (!again.ok() || again->Fingerprint() != baseline.Fingerprint()) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static dtm::fuzz::TempInputFile plain(".jsonl");
  static dtm::fuzz::TempInputFile gzipped(".jsonl.gz");
  const bool is_gzip = size >= 2 && data[0] == 0x1f && data[1] == 0x8b;
  const std::string& path = (is_gzip ? gzipped : plain).Write(data, size);

  dtm::StatusOr<dtm::ProbeSet> probes = dtm::ReadProbeFile(path);
  if (probes.ok()) CheckProbes(*probes);
  dtm::StatusOr<dtm::Baseline> baseline = dtm::ReadBaselineFile(path);
  if (baseline.ok()) CheckBaseline(*baseline);
  return 0;
}
