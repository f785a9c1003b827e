#include "coordinator/job_driver.h"

#include <algorithm>
#include <set>
#include <utility>

#include "coordinator/quant_search.h"
#include "coordinator/racing.h"
#include "coordinator/sparsify_round.h"

namespace dtm {
namespace {

std::optional<RaceSettings> RaceSettingsOf(const JobSpec& spec, uint32_t num_probes) {
  if (!spec.racing.enabled) return std::nullopt;
  RaceSettings race;
  race.options.first = static_cast<uint32_t>(spec.racing.first);
  race.options.step = static_cast<uint32_t>(spec.racing.step);
  race.options.confidence = spec.racing.confidence;
  race.options.epsilon = spec.racing.epsilon;
  race.total_probes = num_probes;
  race.completion_len = spec.completion_len;
  return race;
}

// evaluate and probe: a fixed list of configs, evaluated in one stage; or, with a race, in rounds
// until the race for `keep` places is decided (its kept configs then on every probe).
class FixedConfigsDriver : public JobDriver {
 public:
  explicit FixedConfigsDriver(std::vector<std::string> configs) : configs_(std::move(configs)) {}
  FixedConfigsDriver(std::vector<std::string> configs, size_t keep, const RaceSettings& race)
      : configs_(std::move(configs)), keep_(keep), race_(race) {}

  StatusOr<std::optional<std::vector<std::string>>> NextStage(
      const std::map<std::string, dtm::v1::Metrics>& evaluated) override {
    if (race_) {
      const RaceState state = RaceOf(evaluated);
      if (state.decided()) return std::optional<std::vector<std::string>>();
      std::vector<std::string> next;
      for (const std::string& config : configs_) {
        if (state.need.count(config) != 0) next.push_back(config);
      }
      return std::optional<std::vector<std::string>>(std::move(next));
    }
    for (const std::string& config : configs_) {
      if (evaluated.count(config) == 0) return std::optional<std::vector<std::string>>(configs_);
    }
    return std::optional<std::vector<std::string>>();
  }

  std::map<std::string, uint32_t> StageProbes(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override {
    return race_ ? RaceOf(evaluated).need : std::map<std::string, uint32_t>{};
  }

  std::optional<dtm::v1::RacingSummary> Racing(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override {
    if (!race_) return std::nullopt;
    dtm::v1::RacingSummary summary = SummaryOf(*race_);
    AddCost(CostOf(configs_, RaceOf(evaluated).dropped, evaluated, race_->total_probes), &summary);
    return summary;
  }

  uint64_t MaxStageConfigs() const override { return configs_.size(); }

  std::vector<dtm::v1::ConfigResult> Results(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override {
    std::vector<dtm::v1::ConfigResult> rows = ResultRowsOf(configs_, evaluated);
    if (!race_) return rows;
    const RaceState state = RaceOf(evaluated);
    const std::set<std::string> dropped(state.dropped.begin(), state.dropped.end());
    for (dtm::v1::ConfigResult& row : rows) {
      row.set_complete(row.metrics().num_probes() == race_->total_probes);
      row.set_dropped_by_racing(dropped.count(row.config()) != 0);
    }
    return rows;
  }

 private:
  RaceState RaceOf(const std::map<std::string, dtm::v1::Metrics>& evaluated) const {
    return Race(configs_, evaluated, keep_, *race_, /*complete_kept=*/true);
  }

  std::vector<std::string> configs_;
  size_t keep_ = 0;
  std::optional<RaceSettings> race_;
};

}  // namespace

std::vector<dtm::v1::ConfigResult> ResultRowsOf(const std::vector<std::string>& configs,
                                                const std::map<std::string, dtm::v1::Metrics>& evaluated) {
  std::vector<dtm::v1::ConfigResult> rows;
  for (const std::string& config : configs) {
    dtm::v1::ConfigResult row;
    row.set_config(config);
    auto it = evaluated.find(config);
    row.set_complete(it != evaluated.end());
    if (it != evaluated.end()) *row.mutable_metrics() = it->second;
    rows.push_back(std::move(row));
  }
  return rows;
}

StatusOr<std::unique_ptr<JobDriver>> CreateJobDriver(const JobSpec& spec, const ModelGeometry& geometry,
                                                     const ReadLimits& limits, uint32_t num_probes) {
  const int num_layers = geometry.num_layers;
  const std::optional<RaceSettings> race = RaceSettingsOf(spec, num_probes);
  switch (spec.kind) {
    case JobKind::kEvaluate:
    case JobKind::kProbe: {
      ASSIGN_OR_RETURN(std::vector<std::string> configs, ExpandConfigs(spec, num_layers));
      if (race) {
        return std::unique_ptr<JobDriver>(
            new FixedConfigsDriver(std::move(configs), static_cast<size_t>(spec.racing.keep), *race));
      }
      return std::unique_ptr<JobDriver>(new FixedConfigsDriver(std::move(configs)));
    }
    case JobKind::kQuantSearch: {
      ASSIGN_OR_RETURN(std::vector<std::string> components,
                       SelectComponents(spec.components, num_layers, "quant-search.components"));
      const int64_t count = static_cast<int64_t>(components.size());
      if (spec.depth > count) {
        return InvalidArgumentError("job spec: quant-search.depth: " + std::to_string(spec.depth) + " exceeds the " +
                                    std::to_string(count) + " components the search may quantize (0 = all)");
      }
      const int depth = static_cast<int>(spec.depth == 0 ? count : spec.depth);
      // ParseJobSpec admits exactly these three names.
      const RankMetric rank_by = spec.rank_by == "dppl"  ? RankMetric::kDppl
                                 : spec.rank_by == "ppl" ? RankMetric::kPpl
                                                         : RankMetric::kFdt75;
      return std::unique_ptr<JobDriver>(new QuantSearchDriver(
          std::move(components), spec.search_method, static_cast<int>(spec.beam_width), depth, rank_by, race));
    }
    case JobKind::kSparsifyRound:
      return CreateSparsifyRoundDriver(spec, geometry, limits);
    case JobKind::kTrain:
    case JobKind::kSparsify:
      break;  // no stages of configs: train_planner.h and sparsify_planner.h run them
  }
  return InvalidArgumentError("kind: unknown kind " + std::to_string(static_cast<int>(spec.kind)));
}

}  // namespace dtm
