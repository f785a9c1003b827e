#include "coordinator/quant_search.h"

#include <algorithm>
#include <iterator>
#include <set>
#include <utility>

namespace dtm {

std::string RankMetricName(RankMetric metric) {
  switch (metric) {
    case RankMetric::kFdt75: return "fdt75";
    case RankMetric::kDppl: return "dppl";
    case RankMetric::kPpl: return "ppl";
  }
  return "fdt75";
}

QuantSearchDriver::QuantSearchDriver(std::vector<std::string> components, std::string method, int beam, int depth,
                                     RankMetric rank_by, std::optional<RaceSettings> race)
    : components_(std::move(components)),
      method_(std::move(method)),
      beam_(beam),
      depth_(depth),
      rank_by_(rank_by),
      race_(std::move(race)) {}

bool QuantSearchDriver::Complete(const v1::Metrics& metrics) const {
  return !race_ || metrics.num_probes() == race_->total_probes;
}

bool QuantSearchDriver::RanksBefore(RankMetric metric, const v1::Metrics& a, const std::string& config_a,
                                    const v1::Metrics& b, const std::string& config_b) {
  switch (metric) {
    case RankMetric::kFdt75:
      // SPEC: ties by fdt_mean, then by dppl (lower first), then by the canonical config string.
      if (a.fdt75() != b.fdt75()) return a.fdt75() > b.fdt75();
      if (a.fdt_mean() != b.fdt_mean()) return a.fdt_mean() > b.fdt_mean();
      if (a.dppl() != b.dppl()) return a.dppl() < b.dppl();
      break;
    case RankMetric::kDppl:
      if (a.dppl() != b.dppl()) return a.dppl() < b.dppl();
      break;
    case RankMetric::kPpl:
      if (a.ppl() != b.ppl()) return a.ppl() < b.ppl();
      break;
  }
  return config_a < config_b;
}

uint64_t QuantSearchDriver::LaterConfigs(const std::map<std::string, v1::Metrics>& evaluated) const {
  const uint64_t c = components_.size();
  const uint64_t deepest = depth_ == 0 ? c : std::min<uint64_t>(static_cast<uint64_t>(depth_), c);
  const uint64_t under_way = Run(evaluated).children.size() + 1;
  uint64_t total = 0;
  for (uint64_t level = under_way + 1; level <= deepest; ++level) {
    const uint64_t grown = static_cast<uint64_t>(beam_) * (c - level + 1);
    // c choose level, computed only as far as it stays below `grown` (it overflows quickly).
    uint64_t sets = 1;
    for (uint64_t k = 1; k <= level && sets < grown; ++k) sets = sets * (c - level + k) / k;
    total += std::min(grown, sets);
  }
  return total;
}

bool QuantSearchDriver::Tied(RankMetric metric, const v1::Metrics& a, const v1::Metrics& b) {
  return !RanksBefore(metric, a, "", b, "") && !RanksBefore(metric, b, "", a, "");
}

std::vector<std::string> QuantSearchDriver::Warnings(const std::map<std::string, v1::Metrics>& evaluated) const {
  std::vector<std::string> warnings;
  const Replay replay = Run(evaluated);
  const std::string compared = rank_by_ == RankMetric::kFdt75 ? "fdt75, fdt_mean and dppl" : RankMetricName(rank_by_);
  for (size_t l = 0; l < replay.children.size(); ++l) {
    const std::vector<std::string>& ranked = replay.children[l];
    const size_t keep = static_cast<size_t>(beam_);
    if (ranked.size() <= keep) continue;  // every node made the beam: nothing was chosen
    const std::string& last = ranked[keep - 1];
    const std::string& first_out = ranked[keep];
    // A node the race dropped lost on its bounds, not on the tie-breaks.
    const std::vector<std::string>& dropped = replay.dropped[l];
    if (std::find(dropped.begin(), dropped.end(), first_out) != dropped.end()) continue;
    if (!Tied(rank_by_, evaluated.at(last), evaluated.at(first_out))) continue;
    warnings.push_back("quant-search level " + std::to_string(l + 1) + ": the beam's last place went to '" + last +
                       "' over '" + first_out + "' by the config string alone (equal " + compared +
                       "); a longer completion, more probes or a harsher method would let the metrics decide");
  }
  return warnings;
}

std::string QuantSearchDriver::ConfigOf(const Node& node) const {
  std::string config;
  for (const std::string& component : node) {
    if (!config.empty()) config += ',';
    config += component + "=" + method_;
  }
  return config;
}

QuantSearchDriver::Replay QuantSearchDriver::Run(const std::map<std::string, v1::Metrics>& evaluated) const {
  Replay replay;
  replay.beams.push_back({Node{}});
  for (int level = 1; level <= depth_; ++level) {
    // Children in a fixed order (beam rank, then component order), each set once.
    std::vector<std::pair<std::string, Node>> children;
    std::map<std::string, std::string> parents;  // child -> the best-ranked beam node it extends
    for (const Node& parent : replay.beams.back()) {
      const std::string parent_config = ConfigOf(parent);
      for (const std::string& component : components_) {
        if (parent.count(component) != 0) continue;
        Node child = parent;
        child.insert(component);
        std::string config = ConfigOf(child);
        if (parents.emplace(config, parent_config).second) children.emplace_back(std::move(config), std::move(child));
      }
    }
    if (children.empty()) break;  // every component is held: the fully quantized model was reached
    auto ranks_before = [&](const auto& a, const auto& b) {
      return RanksBefore(rank_by_, evaluated.at(a.first), a.first, evaluated.at(b.first), b.first);
    };
    std::vector<std::pair<std::string, Node>> dropped;
    if (race_) {
      std::vector<std::string> names;
      for (const auto& child : children) names.push_back(child.first);
      RaceState race = Race(names, evaluated, static_cast<size_t>(beam_), *race_, /*complete_kept=*/level == depth_);
      if (!race.decided()) {
        for (const std::string& name : names) {
          if (race.need.count(name) != 0) replay.pending.push_back(name);
        }
        replay.pending_parents = std::move(parents);
        replay.pending_probes = std::move(race.need);
        break;
      }
      const std::set<std::string> out(race.dropped.begin(), race.dropped.end());
      auto split = std::stable_partition(children.begin(), children.end(),
                                         [&](const auto& child) { return out.count(child.first) == 0; });
      dropped.assign(std::make_move_iterator(split), std::make_move_iterator(children.end()));
      children.erase(split, children.end());
    } else {
      const bool complete = std::all_of(children.begin(), children.end(),
                                        [&](const auto& child) { return evaluated.count(child.first) != 0; });
      if (!complete) {
        for (const auto& child : children) replay.pending.push_back(child.first);
        replay.pending_parents = std::move(parents);
        break;
      }
    }
    std::sort(children.begin(), children.end(), ranks_before);
    std::sort(dropped.begin(), dropped.end(), ranks_before);
    replay.children.emplace_back();
    for (const auto& child : children) replay.children.back().push_back(child.first);
    replay.dropped.emplace_back();
    for (const auto& child : dropped) {
      replay.children.back().push_back(child.first);
      replay.dropped.back().push_back(child.first);
    }
    const size_t keep = std::min<size_t>(children.size(), static_cast<size_t>(beam_));
    std::vector<Node> beam;
    for (size_t i = 0; i < keep; ++i) beam.push_back(std::move(children[i].second));
    replay.beams.push_back(std::move(beam));
  }
  return replay;
}

std::map<std::string, uint32_t> QuantSearchDriver::StageProbes(const std::map<std::string, v1::Metrics>& evaluated) const {
  return Run(evaluated).pending_probes;
}

std::optional<v1::RacingSummary> QuantSearchDriver::Racing(const std::map<std::string, v1::Metrics>& evaluated) const {
  if (!race_) return std::nullopt;
  const Replay replay = Run(evaluated);
  v1::RacingSummary summary = SummaryOf(*race_);
  for (size_t i = 0; i < replay.children.size(); ++i) {
    AddCost(CostOf(replay.children[i], replay.dropped[i], evaluated, race_->total_probes), &summary);
  }
  return summary;
}

std::map<std::string, std::string> QuantSearchDriver::StageParents(
    const std::map<std::string, v1::Metrics>& evaluated) const {
  return Run(evaluated).pending_parents;
}

StatusOr<std::optional<std::vector<std::string>>> QuantSearchDriver::NextStage(
    const std::map<std::string, v1::Metrics>& evaluated) {
  Replay replay = Run(evaluated);
  if (replay.pending.empty()) return std::optional<std::vector<std::string>>();
  return std::optional<std::vector<std::string>>(std::move(replay.pending));
}

std::vector<v1::ConfigResult> QuantSearchDriver::Results(const std::map<std::string, v1::Metrics>& evaluated) const {
  const Replay replay = Run(evaluated);
  std::vector<v1::ConfigResult> rows;
  for (size_t level = 0; level < replay.beams.size(); ++level) {
    for (size_t rank = 0; rank < replay.beams[level].size(); ++rank) {
      const std::string config = ConfigOf(replay.beams[level][rank]);
      auto it = evaluated.find(config);
      if (it == evaluated.end()) continue;  // level 0 without a noise floor
      v1::ConfigResult row;
      row.set_config(config);
      *row.mutable_metrics() = it->second;
      row.set_complete(Complete(it->second));
      row.set_search_level(static_cast<uint32_t>(level));
      row.set_rank(static_cast<uint32_t>(rank));
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

std::vector<v1::ConfigResult> QuantSearchDriver::OtherNodes(const std::map<std::string, v1::Metrics>& evaluated) const {
  const Replay replay = Run(evaluated);
  std::vector<v1::ConfigResult> rows;
  for (size_t i = 0; i < replay.children.size(); ++i) {
    // children[i] is level i + 1 ranked, so its beam is its first beams[i + 1].size() nodes.
    const std::vector<std::string>& dropped = replay.dropped[i];
    for (size_t r = replay.beams[i + 1].size(); r < replay.children[i].size(); ++r) {
      v1::ConfigResult row;
      row.set_config(replay.children[i][r]);
      *row.mutable_metrics() = evaluated.at(replay.children[i][r]);
      row.set_complete(Complete(row.metrics()));
      row.set_dropped_by_racing(std::find(dropped.begin(), dropped.end(), row.config()) != dropped.end());
      row.set_search_level(static_cast<uint32_t>(i + 1));
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

std::vector<v1::SearchLevel> QuantSearchDriver::SearchLevels(const std::map<std::string, v1::Metrics>& evaluated,
                                                             const std::set<std::string>& cached) const {
  const Replay replay = Run(evaluated);
  std::vector<v1::SearchLevel> levels;
  for (size_t i = 0; i < replay.children.size(); ++i) {
    v1::SearchLevel level;
    level.set_level(static_cast<uint32_t>(i + 1));
    level.set_nodes(static_cast<uint32_t>(replay.children[i].size()));
    const auto from_cache = std::count_if(replay.children[i].begin(), replay.children[i].end(),
                                          [&](const std::string& config) { return cached.count(config) != 0; });
    level.set_nodes_cached(static_cast<uint32_t>(from_cache));
    if (race_) {
      RaceCost cost = CostOf(replay.children[i], replay.dropped[i], evaluated, race_->total_probes);
      level.set_nodes_dropped(cost.nodes_dropped);
      for (v1::RacingDrop& drop : cost.drops) *level.add_drops() = std::move(drop);
      level.set_probe_evaluations(cost.probe_evaluations);
    }
    levels.push_back(std::move(level));
  }
  return levels;
}

void QuantSearchDriver::FillProgress(const std::map<std::string, v1::Metrics>& evaluated,
                                     v1::JobProgress* progress) const {
  const Replay replay = Run(evaluated);
  const size_t finished = replay.beams.size() - 1;  // levels below the root with a ranked beam
  progress->set_search_level(static_cast<uint32_t>(replay.pending.empty() ? finished : finished + 1));
  if (finished == 0) {
    progress->clear_best_fdt75();
    progress->clear_best_config();
    return;
  }
  const std::string best = ConfigOf(replay.beams.back().front());
  progress->set_best_fdt75(evaluated.at(best).fdt75());
  progress->set_best_config(best);
}

}  // namespace dtm
