// Aggregation of shard results into SPEC's metrics ("Probes, baseline and metrics"), without libtorch.
//
// The coordinator sees a config's per-probe results shard by shard, in whatever order workers finish
// them; the aggregates are computed in probe order so that the numbers do not depend on that order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "dtm/v1/common.pb.h"

namespace dtm {

// The metrics of one config from the per-probe results of all its shards (any shard order; each probe
// identified by probe_index). INVALID_ARGUMENT, naming the probe, if a probe index repeats, fdt or sdt
// exceed completion_len, fdt and sdt contradict each other (sdt is 0 exactly when fdt is
// completion_len, and at most completion_len - fdt), or nll is not finite. No results give num_probes 0,
// zero aggregates and an all-zero histogram of completion_len + 1 bins.
StatusOr<dtm::v1::Metrics> AggregateProbeResults(const std::vector<dtm::v1::ProbeResult>& results,
                                                 int64_t completion_len);

// Ground-truth perplexity (SPEC `ppl`) from the results of a text's windows (each a row of `window`
// tokens whose first is not scored): exp of the mean NLL over every scored token, which for windows
// of one length is exp of the mean of their NLLs. The checks of AggregateProbeResults; INVALID_ARGUMENT
// when there are no windows.
StatusOr<double> PerplexityOfWindows(const std::vector<dtm::v1::ProbeResult>& results, int64_t window);

// SPEC: when about a quarter of the probes never diverge, fdt75 equals the completion length
// (saturated) and ranks nothing. For the configs among `configs` whose fdt75 is the completion
// length: a warning that counts them, gives the range of their share of never-diverging probes (the
// last bin of fdt_histogram) and says what to read or change instead; nullopt when none is.
std::optional<std::string> SaturationWarning(const std::vector<const dtm::v1::Metrics*>& configs,
                                             int64_t completion_len);

}  // namespace dtm
