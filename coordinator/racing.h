// Probe racing (SPEC "Shape of the work": approximate savings, opt-in per job): rank candidates on a
// first group of probes, drop those whose fdt75 clearly cannot reach the kept places, and give the
// others more probes until the kept places are decided or every probe is used.
//
// The bounds are distribution-free, from order statistics: the probes seen so far are treated as a
// random sample of the probe distribution (the probe file's order must not be sorted by anything
// that bears on divergence; dtm's probe sampling draws them at random), and X_(k), the k-th smallest
// FDT seen, bounds that distribution's 0.75 quantile q: P(X_(k) <= q) >= P(Bin(n, 0.75) >= k) and
// P(X_(k) >= q) >= P(Bin(n, 0.75) <= k - 1), discrete distributions included. `confidence` is each
// bound's, at each look; it is not corrected for the many looks and candidates of a race.
//
// A race is a pure function of the metrics it is given, like the drivers that use it: a restarted
// coordinator replaying the cached stages reaches the same decisions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "dtm/v1/common.pb.h"
#include "dtm/v1/dtm_service.pb.h"

namespace dtm {

// The spec's `racing:` (docs/job-spec.md).
struct RacingOptions {
  uint32_t first = 100;       // probes every candidate sees first
  uint32_t step = 100;        // probes added to each survivor per round
  double confidence = 0.95;   // of each bound, in (0.5, 1)
  // Indifference zone, in FDT tokens (>= 0): a candidate outside the leading places may be dropped
  // when its upper bound is below the bar plus epsilon, i.e. when it can beat the last place by less
  // than epsilon. 0 drops only the clear losers; larger values end near-ties sooner.
  double epsilon = 0;
};

// A race's parameters and the job's numbers it needs.
struct RaceSettings {
  RacingOptions options;
  uint32_t total_probes = 0;   // the job's probe set
  int64_t completion_len = 0;  // FDT's range is [0, completion_len]
};

struct QuantileBounds {
  double lower = 0;
  double upper = 0;
};

// Bounds on the 0.75 quantile of the FDT distribution whose sample is `metrics`' fdt_histogram
// (num_probes values in [0, completion_len]). Without a usable order statistic a bound is the range's
// end: 0 and completion_len.
QuantileBounds Fdt75Bounds(const dtm::v1::Metrics& metrics, double confidence, int64_t completion_len);

// Where a race among `candidates` stands, given the metrics of those evaluated so far (each on the
// first num_probes probes).
struct RaceState {
  // Candidates short of every probe whose upper bound is below the keep-th best lower bound, in
  // candidate order.
  std::vector<std::string> dropped;
  // The others, in candidate order: the kept places are among them.
  std::vector<std::string> alive;
  // Candidates that need more probes before the race is decided: the probe count each must reach
  // (at most total_probes). Empty once decided.
  std::map<std::string, uint32_t> need;
  bool decided() const { return need.empty(); }
};

// A race for `keep` places among `candidates` over the job's probes. Unevaluated candidates need
// `first` probes. Once all are evaluated, the leaders are the `keep` candidates with the highest
// lower bounds (ties by fdt75, then fdt_mean, on the probes seen, then candidate order) and the bar
// is the last leader's lower bound; the dropped are the others short of every probe whose upper
// bound is below bar + epsilon (one that saw every probe is ranked, not dropped; with epsilon 0 no
// leader could be dropped anyway). The race is decided when at most `keep` remain, or when every one
// remaining has seen every probe; otherwise each remaining one short of every probe needs `step`
// more. With `complete_kept`, a decided race's remaining candidates then need every probe (a
// search's last level, whose nodes are its answer). A dropped candidate can come back when the bar
// falls as the others see more probes: the state depends only on the metrics.
RaceState Race(const std::vector<std::string>& candidates, const std::map<std::string, dtm::v1::Metrics>& evaluated,
               size_t keep, const RaceSettings& settings, bool complete_kept);

// What a race over `candidates` spent (the probes each was evaluated on; unevaluated ones count 0)
// and what it dropped, by the probe count each was dropped at (ascending); `exact` is candidates x
// total_probes, what evaluating every candidate on every probe spends.
struct RaceCost {
  uint64_t probe_evaluations = 0;
  uint64_t exact = 0;
  uint32_t nodes_dropped = 0;
  std::vector<dtm::v1::RacingDrop> drops;
};
RaceCost CostOf(const std::vector<std::string>& candidates, const std::vector<std::string>& dropped,
                const std::map<std::string, dtm::v1::Metrics>& evaluated, uint32_t total_probes);

// A summary holding `race`'s parameters and nothing spent yet.
dtm::v1::RacingSummary SummaryOf(const RaceSettings& race);

// Adds `cost` to a job's summary (drops merged by probe count).
void AddCost(const RaceCost& cost, dtm::v1::RacingSummary* summary);

}  // namespace dtm
