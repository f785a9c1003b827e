// JobDriver: what a job kind evaluates, stage by stage. The scheduler owns the mechanics (baseline,
// shards, cache, leases, aggregation); a driver only decides which configs come next from the
// metrics of the configs before, which is how searches plug in (a tree search is one stage per
// level).
//
// Drivers are deterministic functions of the spec and the metrics they are given: a coordinator
// that restarts builds a fresh driver and replays every stage, each answered from the cache, so a
// driver keeps no state that must survive a restart.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/jsonl.h"
#include "common/status.h"
#include "coordinator/job_spec.h"
#include "coordinator/model_geometry.h"
#include "dtm/v1/common.pb.h"
#include "dtm/v1/dtm_service.pb.h"
#include "dtm/v1/job.pb.h"

namespace dtm {

class JobDriver {
 public:
  virtual ~JobDriver() = default;

  // The configs of the next stage (canonical SPEC strings; "" is the uncompressed model), given the
  // metrics of every config evaluated so far in this job. nullopt when the job is finished.
  virtual StatusOr<std::optional<std::vector<std::string>>> NextStage(
      const std::map<std::string, dtm::v1::Metrics>& evaluated) = 0;

  // For configs of the stage NextStage returns for `evaluated`: the config each one extends, where it
  // extends one (a tree search's parent node), so that workers keep the parent's residual streams
  // for its siblings (Task.parent_config). Configs left out extend the uncompressed model.
  virtual std::map<std::string, std::string> StageParents(
      const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/) const {
    return {};
  }

  // Racing drivers: for configs of the stage NextStage returns for `evaluated`, the probes (the first
  // ones of the probe set) each must have been evaluated on; the planner rounds up to whole shards,
  // and aggregates each config over the shards it planned. Configs left out need every probe.
  virtual std::map<std::string, uint32_t> StageProbes(
      const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/) const {
    return {};
  }

  // Racing drivers: what their races spent and dropped so far (RacingSummary; a search counts its
  // finished levels, a probe job its one race as it stands). Others: nullopt.
  virtual std::optional<dtm::v1::RacingSummary> Racing(
      const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/) const {
    return std::nullopt;
  }

  // The most configs any one stage may name, known before the first: what submission checks against
  // the coordinator's limit on a stage's tasks.
  virtual uint64_t MaxStageConfigs() const = 0;

  // The job's result rows once NextStage has returned nullopt, in the order users see them.
  virtual std::vector<dtm::v1::ConfigResult> Results(const std::map<std::string, dtm::v1::Metrics>& evaluated) const = 0;

  // Search kinds: the nodes of every finished level that Results leaves out (those outside the
  // beam), each with its search_level and without a rank, level by level in ranking order; stored
  // beside Results for GetResultsRequest.all_nodes. Others: none (Results holds every config).
  virtual std::vector<dtm::v1::ConfigResult> OtherNodes(
      const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/) const {
    return {};
  }

  // Search kinds: per finished level, the nodes evaluated and those among `cached` (configs whose
  // every shard came from the cache). Others: none.
  virtual std::vector<dtm::v1::SearchLevel> SearchLevels(const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/,
                                                         const std::set<std::string>& /*cached*/) const {
    return {};
  }

  // How many configs the stages after the next one (the one NextStage returns for `evaluated`) can
  // hold at most, for the whole job's ETA. Kinds whose stages are all known: 0.
  virtual uint64_t LaterConfigs(const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/) const { return 0; }

  // What a reader must know about how the answer was reached (GetResultsResponse.warnings), e.g. a
  // search level whose beam was decided by the config string alone. Others: none.
  virtual std::vector<std::string> Warnings(const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/) const {
    return {};
  }

  // Search kinds set the level under evaluation and the best node so far; others leave them absent.
  virtual void FillProgress(const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/,
                            dtm::v1::JobProgress* /*progress*/) const {}

  // sparsify-round: the allocation, once the metrics it needs are in. Others: none.
  virtual std::optional<dtm::v1::SparsityAllocation> Allocation(
      const std::map<std::string, dtm::v1::Metrics>& /*evaluated*/) const {
    return std::nullopt;
  }
};

// One row per config in the given order, with its metrics when evaluated (complete) and without
// them otherwise: the results of drivers whose configs are a fixed list.
std::vector<dtm::v1::ConfigResult> ResultRowsOf(const std::vector<std::string>& configs,
                                                const std::map<std::string, dtm::v1::Metrics>& evaluated);

// evaluate and probe: one stage holding every config of the spec (ExpandConfigs), then done; a probe
// job with `racing:` races them for its `keep` places instead (stages of rounds).
// quant-search: a QuantSearchDriver over the selected components; its depth must not exceed their
// number (0 = all of them).
// sparsify-round: a SparsifyRoundDriver (sparsify_round.h); it needs the component sizes, and reads
// the spec's `previous` file within `limits`.
// `num_probes` (the job's probe count) is what a race runs over; 0 only where no stage is planned
// (checking a submission).
StatusOr<std::unique_ptr<JobDriver>> CreateJobDriver(const JobSpec& spec, const ModelGeometry& geometry,
                                                     const ReadLimits& limits = {}, uint32_t num_probes = 0);

}  // namespace dtm
