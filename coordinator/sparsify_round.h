// SPEC's balanced sparsification round (paper Sec. 4.1, "Pruning of LLMs") as a JobDriver.
//
// One stage: every selected component C is probed alone with prune:(current_C + s) for s = step/2
// and 3*step/2 (SPEC, the paper's step +- step/2; a spec's `probe_at` may name other multiples of the
// step), targets rounded to 1e-6, as far as C has room, against the job's model, which
// is the current model: the dense one in round 1, later the previous round's masks applied (and
// trained) as a checkpoint. From those FDT75s the allocation solver (sparsity_allocation.h) decides
// each component's extra sparsity: balanced (max-min predicted FDT75 under the parameter-weighted
// step) or uniform (the paper's baseline, the same step everywhere). The same probes serve both, so a
// uniform round after a balanced one costs nothing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/jsonl.h"
#include "coordinator/job_driver.h"
#include "coordinator/model_geometry.h"

namespace dtm {

// 0.1 -> "10%": a sparsity or step in messages.
std::string SparsityPercent(double fraction);

// The previous round's per-component target sparsities from its results file (`dtmctl results ROUND
// --format json`), checked against this job's model: same layer count and, where known, the same
// parameter count for every component, else the file is for another model. INVALID_ARGUMENT naming
// the file and what is wrong; the file is read within `limits`.
StatusOr<std::map<std::string, double>> ReadPreviousRound(const std::string& path, const ModelGeometry& geometry,
                                                          const ReadLimits& limits = {});

class SparsifyRoundDriver : public JobDriver {
 public:
  struct Component {
    std::string name;
    uint64_t params = 0;
    double current = 0;  // sparsity before the round, in [0, 1)
  };

  // `components` non-empty with params > 0; `step` in (0, 1) and within what they have left;
  // `probe_multiples` ascending and positive: the extra sparsities probed, in steps.
  SparsifyRoundDriver(std::vector<Component> components, double step, std::vector<double> probe_multiples,
                      bool uniform, int64_t completion_len, int num_layers);

  // The probes first; once they are in, the allocation is solved (a solver error fails the job), and
  // the job is done.
  StatusOr<std::optional<std::vector<std::string>>> NextStage(
      const std::map<std::string, dtm::v1::Metrics>& evaluated) override;

  // The one stage: every component's probes.
  uint64_t MaxStageConfigs() const override { return ProbeConfigs().size(); }

  // The probes, component by component, smallest extra first.
  std::vector<dtm::v1::ConfigResult> Results(const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;

  // The allocation once every probe is in (model_fingerprint left for the caller to set).
  std::optional<dtm::v1::SparsityAllocation> Allocation(
      const std::map<std::string, dtm::v1::Metrics>& evaluated) const override;

  // The probe configs of every component in stage order.
  std::vector<std::string> ProbeConfigs() const;

 private:
  struct Probe {
    std::string config;  // "COMPONENT=prune:TARGET"
    double extra = 0;    // TARGET - current: the s the solver sees
  };

  bool AllProbesIn(const std::map<std::string, dtm::v1::Metrics>& evaluated) const;
  StatusOr<dtm::v1::SparsityAllocation> Solve(const std::map<std::string, dtm::v1::Metrics>& evaluated) const;

  std::vector<Component> components_;
  std::vector<std::vector<Probe>> probes_;  // per component
  double step_;
  bool uniform_;
  int64_t completion_len_;
  int num_layers_;
};

// The named components with their sizes from `geometry` and their sparsity from `current` (0 where
// it has none). FAILED_PRECONDITION naming a component whose size is unknown, which `who` needs.
StatusOr<std::vector<SparsifyRoundDriver::Component>> SizedComponents(const std::vector<std::string>& names,
                                                                      const ModelGeometry& geometry,
                                                                      const std::map<std::string, double>& current,
                                                                      const std::string& who);

// The driver of a sparsify-round spec on a model of `geometry`: the selected components (spec globs),
// their sizes (which must be known), their current sparsity (spec.previous) and the check that the
// step fits in what is left to prune (on average for balanced, per component for uniform). The
// previous round's file is read within `limits`.
StatusOr<std::unique_ptr<JobDriver>> CreateSparsifyRoundDriver(const JobSpec& spec, const ModelGeometry& geometry,
                                                               const ReadLimits& limits);

}  // namespace dtm
