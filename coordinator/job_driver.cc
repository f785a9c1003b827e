#include "coordinator/job_driver.h"

#include <utility>

#include "coordinator/quant_search.h"
#include "coordinator/sparsify_round.h"

namespace dtm {
namespace {

// evaluate and probe: a fixed list of configs, evaluated in one stage.
class FixedConfigsDriver : public JobDriver {
 public:
  explicit FixedConfigsDriver(std::vector<std::string> configs) : configs_(std::move(configs)) {}

  StatusOr<std::optional<std::vector<std::string>>> NextStage(
      const std::map<std::string, dtm::v1::Metrics>& evaluated) override {
    for (const std::string& config : configs_) {
      if (evaluated.count(config) == 0) return std::optional<std::vector<std::string>>(configs_);
    }
    return std::optional<std::vector<std::string>>();
  }

  uint64_t MaxStageConfigs() const override { return configs_.size(); }

  std::vector<dtm::v1::ConfigResult> Results(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override {
    return ResultRowsOf(configs_, evaluated);
  }

 private:
  std::vector<std::string> configs_;
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
                                                     const ReadLimits& limits) {
  const int num_layers = geometry.num_layers;
  switch (spec.kind) {
    case JobKind::kEvaluate:
    case JobKind::kProbe: {
      ASSIGN_OR_RETURN(std::vector<std::string> configs, ExpandConfigs(spec, num_layers));
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
      return std::unique_ptr<JobDriver>(new QuantSearchDriver(std::move(components), spec.search_method,
                                                              static_cast<int>(spec.beam_width), depth, rank_by));
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
