// The paper's sparsification run (SPEC "Sparsification run", paper Sec. 4.2 and Fig. 4): rounds of
// balanced (or uniform) magnitude pruning, each followed by recovery training, decided by one pure
// function of what is stored. A coordinator that restarts reads the store again and resumes at the
// stage it was in; nothing stored is recomputed, and the same stored results always give the same
// next step (the same probes give the same allocation, so the same masks).
//
// Round r (1-based) of R, on the round's model M_r (the starting model for r = 1, else round r-1's
// trained model):
//   1. probe: every component of M_r alone at current + m * step for the plan's multiples m (SPEC:
//      step/2 and 3*step/2), against M_r's own baseline; skipped by a uniform run;
//   2. allocate: the sparsify-round solver on those probes (uniform: the step everywhere), giving
//      each component's new cumulative target; pure, so nothing is stored for it;
//   3. train: one gang task that prunes M_r by magnitude to the targets (the masks) and trains it,
//      masked then unmasked phases, writing the round's model to RoundModelDir(r); the last round's
//      task sets the masked weights to 0 again after its last step (its unmasked phase let them
//      move), so the run's final model, RoundModelDir(R) = OUTPUT/final, has exactly the targets;
//   4. evaluate: the round's model against the *starting* model's baseline (FDT75, SDT, DPPL, and
//      ppl when the job has held-out text), so that rounds are comparable.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "coordinator/sparsify_round.h"
#include "dtm/v1/dtm_service.pb.h"

namespace dtm {

// The paper's schedule: 20, 15, 10, 10, 5, 5, 5, 5 percent of the weights per round, 75 % in all.
std::vector<double> PaperSparsifySchedule();

struct SparsifyRunPlan {
  std::string model;                // the starting model's folder (dense, or an earlier run's)
  std::string output;               // the run's folder: round-1/ ... round-(R-1)/ and final/
  std::vector<double> schedule;     // each round's step, in (0, 1); their sum with the start < 1
  bool uniform = false;             // the paper's baseline: every component gets each step
  std::vector<double> probe_multiples = {0.5, 1.5};  // balanced runs' probe points, in steps
  int64_t completion_len = 0;       // the probes' completion length (FDT75 with nothing pruned)
  int num_layers = 0;
  // Every component the run prunes, in component order, with its size and starting sparsity.
  std::vector<SparsifyRoundDriver::Component> components;
};

// INVALID_ARGUMENT naming what is wrong: no rounds, a step outside (0, 1), a schedule that with the
// starting sparsity reaches 100 % on average (or, for uniform, in some component), no components.
Status CheckSparsifyRunPlan(const SparsifyRunPlan& plan);

// Where round r's trained model goes: OUTPUT/round-r, and OUTPUT/final for the last round.
std::string RoundModelDir(const SparsifyRunPlan& plan, int round);
// The model round r starts from: the plan's model for round 1, else round r-1's trained model.
std::string RoundInputModel(const SparsifyRunPlan& plan, int round);

enum class SparsifyStage { kProbe, kTrain, kEvaluate, kDone };
const char* SparsifyStageName(SparsifyStage stage);  // "probe", "train", ...

// What is stored about one round; an empty record is a round not begun.
struct SparsifyRoundRecord {
  std::map<std::string, dtm::v1::Metrics> probes;  // probe config -> metrics on the round's model
  std::optional<std::string> trained_fingerprint;  // the training task's result: the model written
  bool evaluated = false;                          // the round model's evaluation is stored
};

struct SparsifyRunRecord {
  std::vector<SparsifyRoundRecord> rounds;  // round r at index r-1; fewer = not begun
};

// The next thing the run needs.
struct SparsifyAction {
  SparsifyStage stage = SparsifyStage::kDone;
  int round = 0;                     // 1-based; 0 for kDone
  std::string model;                 // the model the stage reads (see the stages above)
  std::vector<std::string> configs;  // kProbe: every probe config of the round, in stage order
  // kTrain: "COMPONENT=prune:TARGET" for every component with a target above 0 (the cumulative
  // targets), the folder it writes, and whether it re-masks after its last step (the last round).
  std::string prune_config;
  std::string output;
  bool remask = false;
  // kTrain, kEvaluate: the round's allocation.
  std::optional<dtm::v1::SparsityAllocation> allocation;
};

// The next stage of a checked plan from what is stored. Stages run in order, round by round;
// a stage's own results (probes, a trained fingerprint, the evaluation) move the run on. An error
// when the allocation cannot be solved from the stored probes (the solver's message).
StatusOr<SparsifyAction> NextSparsifyAction(const SparsifyRunPlan& plan, const SparsifyRunRecord& record);

// The allocation of every round whose probes are in (every round up to the first that is not, for
// a balanced run; every round for a uniform one), for results and `export-config`.
StatusOr<std::vector<dtm::v1::SparsityAllocation>> SparsifyRunAllocations(const SparsifyRunPlan& plan,
                                                                         const SparsifyRunRecord& record);

}  // namespace dtm
