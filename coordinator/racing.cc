#include "coordinator/racing.h"

#include <algorithm>
#include <cmath>

namespace dtm {
namespace {

constexpr double kQuantile = 0.75;  // fdt75's

// P(Bin(n, p) <= j) for j = 0..n.
std::vector<double> BinomialCdf(uint64_t n, double p) {
  std::vector<double> cdf(n + 1);
  const double log_n = std::lgamma(static_cast<double>(n) + 1);
  double sum = 0;
  for (uint64_t j = 0; j <= n; ++j) {
    const double jd = static_cast<double>(j);
    const double log_pmf = log_n - std::lgamma(jd + 1) - std::lgamma(static_cast<double>(n - j) + 1) +
                           jd * std::log(p) + static_cast<double>(n - j) * std::log1p(-p);
    sum += std::exp(log_pmf);
    cdf[j] = std::min(1.0, sum);
  }
  return cdf;
}

// The k-th smallest FDT (1-based) of the probes counted in metrics.fdt_histogram.
double OrderStatistic(const dtm::v1::Metrics& metrics, uint64_t k) {
  uint64_t seen = 0;
  for (int v = 0; v < metrics.fdt_histogram_size(); ++v) {
    seen += metrics.fdt_histogram(v);
    if (seen >= k) return v;
  }
  return metrics.fdt_histogram_size() - 1;
}

}  // namespace

QuantileBounds Fdt75Bounds(const v1::Metrics& metrics, double confidence, int64_t completion_len) {
  QuantileBounds bounds{0, static_cast<double>(completion_len)};
  const uint64_t n = metrics.num_probes();
  if (n == 0) return bounds;
  const std::vector<double> cdf = BinomialCdf(n, kQuantile);
  // Lower: the largest k with P(Bin >= k) = 1 - cdf[k - 1] >= confidence.
  for (uint64_t k = n; k >= 1; --k) {
    if (1.0 - cdf[k - 1] >= confidence) {
      bounds.lower = OrderStatistic(metrics, k);
      break;
    }
  }
  // Upper: the smallest k with P(Bin <= k - 1) = cdf[k - 1] >= confidence.
  for (uint64_t k = 1; k <= n; ++k) {
    if (cdf[k - 1] >= confidence) {
      bounds.upper = OrderStatistic(metrics, k);
      break;
    }
  }
  return bounds;
}

RaceState Race(const std::vector<std::string>& candidates, const std::map<std::string, v1::Metrics>& evaluated,
               size_t keep, const RaceSettings& settings, bool complete_kept) {
  const RacingOptions& options = settings.options;
  const uint32_t total_probes = settings.total_probes;
  RaceState state;
  const uint32_t first = std::min(options.first, total_probes);
  for (const std::string& c : candidates) {
    if (evaluated.count(c) == 0) state.need[c] = first;
  }
  if (!state.need.empty()) {
    state.alive = candidates;
    return state;
  }
  std::vector<QuantileBounds> bounds;
  bounds.reserve(candidates.size());
  for (const std::string& c : candidates) bounds.push_back(Fdt75Bounds(evaluated.at(c), options.confidence, settings.completion_len));
  auto probes_of = [&](const std::string& c) { return evaluated.at(c).num_probes(); };
  // The leaders: the keep highest lower bounds; the point estimates order equal bounds, so that an
  // epsilon never drops a candidate that leads on the probes seen in favour of one that trails.
  std::vector<size_t> order(candidates.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    if (bounds[a].lower != bounds[b].lower) return bounds[a].lower > bounds[b].lower;
    const v1::Metrics& ma = evaluated.at(candidates[a]);
    const v1::Metrics& mb = evaluated.at(candidates[b]);
    if (ma.fdt75() != mb.fdt75()) return ma.fdt75() > mb.fdt75();
    return ma.fdt_mean() > mb.fdt_mean();
  });
  std::vector<bool> leader(candidates.size(), false);
  // Fewer candidates than places: nothing to drop.
  const bool contested = keep >= 1 && keep < candidates.size();
  for (size_t r = 0; contested && r < keep; ++r) leader[order[r]] = true;
  const double bar = contested ? bounds[order[keep - 1]].lower : 0;
  // One that saw every probe skipped nothing: below the bar it is simply ranked lower.
  for (size_t i = 0; i < candidates.size(); ++i) {
    const bool drop = contested && !leader[i] && bounds[i].upper < bar + options.epsilon &&
                      probes_of(candidates[i]) < total_probes;
    (drop ? state.dropped : state.alive).push_back(candidates[i]);
  }
  if (state.alive.size() <= keep) {
    if (complete_kept) {
      for (const std::string& c : state.alive) {
        if (probes_of(c) < total_probes) state.need[c] = total_probes;
      }
    }
    return state;
  }
  for (const std::string& c : state.alive) {
    const uint64_t seen = probes_of(c);
    if (seen < total_probes) {
      state.need[c] = static_cast<uint32_t>(std::min<uint64_t>(total_probes, seen + std::max<uint32_t>(1, options.step)));
    }
  }
  return state;
}

v1::RacingSummary SummaryOf(const RaceSettings& race) {
  v1::RacingSummary summary;
  summary.set_first_probes(std::min(race.options.first, race.total_probes));
  summary.set_step_probes(race.options.step);
  summary.set_confidence(race.options.confidence);
  summary.set_epsilon(race.options.epsilon);
  return summary;
}

RaceCost CostOf(const std::vector<std::string>& candidates, const std::vector<std::string>& dropped,
                const std::map<std::string, v1::Metrics>& evaluated, uint32_t total_probes) {
  RaceCost cost;
  for (const std::string& c : candidates) {
    auto it = evaluated.find(c);
    if (it != evaluated.end()) cost.probe_evaluations += it->second.num_probes();
    cost.exact += total_probes;
  }
  std::map<uint32_t, uint32_t> by_probes;
  for (const std::string& c : dropped) ++by_probes[static_cast<uint32_t>(evaluated.at(c).num_probes())];
  for (const auto& [probes, nodes] : by_probes) {
    v1::RacingDrop drop;
    drop.set_probes(probes);
    drop.set_nodes(nodes);
    cost.drops.push_back(drop);
    cost.nodes_dropped += nodes;
  }
  return cost;
}

void AddCost(const RaceCost& cost, v1::RacingSummary* summary) {
  summary->set_probe_evaluations(summary->probe_evaluations() + cost.probe_evaluations);
  summary->set_exact_probe_evaluations(summary->exact_probe_evaluations() + cost.exact);
  summary->set_nodes_dropped(summary->nodes_dropped() + cost.nodes_dropped);
  std::map<uint32_t, uint32_t> by_probes;
  for (const v1::RacingDrop& d : summary->drops()) by_probes[d.probes()] += d.nodes();
  for (const v1::RacingDrop& d : cost.drops) by_probes[d.probes()] += d.nodes();
  summary->clear_drops();
  for (const auto& [probes, nodes] : by_probes) {
    v1::RacingDrop* drop = summary->add_drops();
    drop->set_probes(probes);
    drop->set_nodes(nodes);
  }
}

}  // namespace dtm
