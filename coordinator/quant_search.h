// The quantization tree search of SPEC ("Searches"; the paper's Sec. 4.1) as a JobDriver.
//
// Level 0 is the uncompressed model. Level L expands each of the best `beam` nodes of level L-1 by
// every selected component it does not hold yet (the same set reached twice is one child), ranks
// all children by the job's ranking metric (RankMetric) and keeps the best `beam`. With racing
// (racing.h), each level's children race for the beam's places over rounds of probes; the nodes it
// drops rank after the rest, and only the last level's beam is evaluated on every probe. The driver is a pure function of the metrics it is given: it replays every level from the
// evaluated configs on each call, so a restarted coordinator (whose stages are all answered from the
// cache) lands exactly where the interrupted one was.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coordinator/job_driver.h"
#include "coordinator/racing.h"

namespace dtm {

// What a search ranks its nodes by (the spec's `rank_by`; the paper's Table 1 compares the three).
enum class RankMetric {
  kFdt75,  // higher first; ties: higher fdt_mean, then lower dppl, then the canonical config string
  kDppl,   // lower first; ties: the canonical config string
  kPpl,    // lower first (Metrics.ppl); ties: the canonical config string
};

// "fdt75", "dppl", "ppl".
std::string RankMetricName(RankMetric metric);

class QuantSearchDriver : public JobDriver {
 public:
  // `components`: the names a node may hold, `method`: the canonical method applied to each,
  // `beam` >= 1, 1 <= `depth` <= components.size().
  // `race`: race each level (fdt75 ranking only), or evaluate every child on every probe (nullopt).
  QuantSearchDriver(std::vector<std::string> components, std::string method, int beam, int depth,
                    RankMetric rank_by = RankMetric::kFdt75, std::optional<RaceSettings> race = std::nullopt);

  StatusOr<std::optional<std::vector<std::string>>> NextStage(
      const std::map<std::string, dtm::v1::Metrics>& evaluated) override;

  // A level's children: each of the beam's nodes grown by each component it lacks, at most.
  uint64_t MaxStageConfigs() const override { return static_cast<uint64_t>(beam_) * components_.size(); }
  // A level's node -> the best-ranked node of the level before that it extends.
  std::map<std::string, std::string> StageParents(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;
  // With racing: the probes each child of the level under way must reach in the next round.
  std::map<std::string, uint32_t> StageProbes(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;
  // With racing: what the finished levels' races spent and dropped.
  std::optional<dtm::v1::RacingSummary> Racing(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;

  // Every finished level's best nodes, level by level and by rank; the uncompressed model as level 0
  // when it was evaluated (the noise floor).
  std::vector<dtm::v1::ConfigResult> Results(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;
  // Every finished level's nodes below its beam, level by level in ranking order, without rank; with
  // racing, the dropped ones last, marked dropped_by_racing.
  std::vector<dtm::v1::ConfigResult> OtherNodes(
      const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;

  std::vector<dtm::v1::SearchLevel> SearchLevels(const std::map<std::string, dtm::v1::Metrics>& evaluated,
                                                 const std::set<std::string>& cached) const override;

  // The level under evaluation and the best node of the deepest finished level.
  void FillProgress(const std::map<std::string, dtm::v1::Metrics>& evaluated,
                    dtm::v1::JobProgress* progress) const override;

  // The levels after the one under way, each at most beam x (components - level + 1) nodes and
  // never more than the sets of `level` components.
  uint64_t LaterConfigs(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;

  // Per finished level whose beam's last place went to one of two nodes that tie on every metric of
  // the ranking, so that the config string alone chose it (SPEC's last tie-break): which two, and
  // what would separate them.
  std::vector<std::string> Warnings(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;

  // True when (a, config_a) ranks before (b, config_b) by `metric` (RankMetric says how).
  static bool RanksBefore(RankMetric metric, const dtm::v1::Metrics& a, const std::string& config_a,
                          const dtm::v1::Metrics& b, const std::string& config_b);
  // True when `metric` ranks neither of a and b before the other but for their config strings.
  static bool Tied(RankMetric metric, const dtm::v1::Metrics& a, const dtm::v1::Metrics& b);

 private:
  using Node = std::set<std::string>;  // component names, kept sorted as the canonical config wants

  struct Replay {
    std::vector<std::vector<Node>> beams;  // beams[L]: the best nodes of level L, best first
    std::vector<std::vector<std::string>> children;  // children[L-1]: every node of finished level L, ranked
    std::vector<std::vector<std::string>> dropped;   // racing: dropped[L-1]: those the race dropped
    std::vector<std::string> pending;      // the children of the first unfinished level, if any
    std::map<std::string, std::string> pending_parents;  // each pending child -> the beam node it extends
    std::map<std::string, uint32_t> pending_probes;      // racing: the probes each pending child must reach
  };

  Replay Run(const std::map<std::string, dtm::v1::Metrics>& evaluated) const;
  std::string ConfigOf(const Node& node) const;
  // False while `metrics` covers part of the probes (racing).
  bool Complete(const dtm::v1::Metrics& metrics) const;

  std::vector<std::string> components_;
  std::string method_;
  int beam_;
  int depth_;
  RankMetric rank_by_;
  std::optional<RaceSettings> race_;
};

}  // namespace dtm
