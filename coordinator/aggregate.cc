#include "coordinator/aggregate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "common/quantile.h"

namespace dtm {
namespace {

Status BadProbe(const dtm::v1::ProbeResult& r, const std::string& why) {
  return InvalidArgumentError("shard results: probe " + std::to_string(r.probe_index()) + " ('" +
                              r.probe_id() + "'): " + why);
}

// The invariants of one probe's FDT/SDT/NLL (SPEC): whatever breaks them is a worker bug, and averaging it
// in would hide it.
Status CheckProbe(const dtm::v1::ProbeResult& r, int64_t completion_len) {
  const int64_t fdt = r.fdt();
  const int64_t sdt = r.sdt();
  const std::string m = std::to_string(completion_len);
  if (fdt > completion_len)
    return BadProbe(r, "fdt " + std::to_string(fdt) + " exceeds the completion length " + m);
  if (sdt > completion_len)
    return BadProbe(r, "sdt " + std::to_string(sdt) + " exceeds the completion length " + m);
  if (fdt == completion_len && sdt != 0) {
    return BadProbe(r,
                    "sdt " + std::to_string(sdt) + " with no divergence (fdt = completion length " + m + ")");
  }
  if (fdt < completion_len && (sdt < 1 || sdt > completion_len - fdt)) {
    return BadProbe(r, "sdt " + std::to_string(sdt) + " is not in [1, " +
                           std::to_string(completion_len - fdt) + "] for fdt " + std::to_string(fdt) +
                           " and completion length " + m);
  }
  if (!std::isfinite(r.nll())) return BadProbe(r, "nll " + std::to_string(r.nll()) + " is not finite");
  return OkStatus();
}

}  // namespace

StatusOr<dtm::v1::Metrics> AggregateProbeResults(const std::vector<dtm::v1::ProbeResult>& results,
                                                 int64_t completion_len) {
  if (completion_len < 1) {
    return InvalidArgumentError("shard results: completion length " + std::to_string(completion_len) +
                                " must be at least 1");
  }
  // Probe order, not arrival order: floating-point sums then come out the same however shards land.
  std::vector<const dtm::v1::ProbeResult*> ordered;
  ordered.reserve(results.size());
  for (const dtm::v1::ProbeResult& r : results) ordered.push_back(&r);
  std::sort(ordered.begin(), ordered.end(),
            [](const auto* a, const auto* b) { return a->probe_index() < b->probe_index(); });

  dtm::v1::Metrics metrics;
  std::vector<uint32_t> histogram(static_cast<size_t>(completion_len) + 1, 0);
  std::vector<double> fdts;
  fdts.reserve(ordered.size());
  double fdt_sum = 0, sdt_sum = 0, ppl_sum = 0, nll_sum = 0, outlier_sum = 0;
  for (size_t i = 0; i < ordered.size(); ++i) {
    const dtm::v1::ProbeResult& r = *ordered[i];
    if (i > 0 && ordered[i - 1]->probe_index() == r.probe_index()) {
      return BadProbe(r, "reported twice (also as '" + ordered[i - 1]->probe_id() + "')");
    }
    RETURN_IF_ERROR(CheckProbe(r, completion_len));
    fdts.push_back(static_cast<double>(r.fdt()));
    fdt_sum += static_cast<double>(r.fdt());
    sdt_sum += static_cast<double>(r.sdt());
    ppl_sum += std::exp(r.nll());
    nll_sum += r.nll();
    outlier_sum += static_cast<double>(r.outlier_columns());
    ++histogram[r.fdt()];
  }
  for (uint32_t count : histogram) metrics.add_fdt_histogram(count);
  metrics.set_num_probes(static_cast<uint32_t>(ordered.size()));
  if (ordered.empty()) return metrics;
  const double n = static_cast<double>(ordered.size());
  metrics.set_fdt_mean(fdt_sum / n);
  metrics.set_sdt_mean(sdt_sum / n);
  metrics.set_dppl(ppl_sum / n);
  metrics.set_nll_mean(nll_sum / n);
  metrics.set_outlier_columns_mean(outlier_sum / n);
  metrics.set_fdt75(Quantile(std::move(fdts), 0.75));
  return metrics;
}

std::optional<std::string> SaturationWarning(const std::vector<const dtm::v1::Metrics*>& configs,
                                             int64_t completion_len) {
  int saturated = 0;
  double lowest = 1, highest = 0;
  for (const dtm::v1::Metrics* m : configs) {
    if (m->num_probes() == 0 || m->fdt75() < static_cast<double>(completion_len) || m->fdt_histogram().empty()) continue;
    ++saturated;
    const double never = static_cast<double>(m->fdt_histogram(m->fdt_histogram_size() - 1)) / m->num_probes();
    lowest = std::min(lowest, never);
    highest = std::max(highest, never);
  }
  if (saturated == 0) return std::nullopt;
  char share[64];
  std::snprintf(share, sizeof share, "%.0f to %.0f %%", 100 * lowest, 100 * highest);
  return "fdt75 is saturated for " + std::to_string(saturated) + " of " + std::to_string(configs.size()) +
         " configs: " + share + " of their probes never diverge, so fdt75 is the completion length (" +
         std::to_string(completion_len) +
         ") and cannot rank them; compare fdt_mean, or use a longer completion, more probes or a harsher method";
}

StatusOr<double> PerplexityOfWindows(const std::vector<dtm::v1::ProbeResult>& results, int64_t window) {
  if (results.empty()) return InvalidArgumentError("no ppl windows to compute a perplexity over");
  ASSIGN_OR_RETURN(dtm::v1::Metrics metrics, AggregateProbeResults(results, window - 1));
  return std::exp(metrics.nll_mean());
}

}  // namespace dtm
