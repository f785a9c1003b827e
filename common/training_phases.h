// The phases of a recovery-training run (SPEC "Recovery training"), as `dtmctl train --phases` and a
// train job's `phases:` write them. Free of libtorch, so that the coordinator checks a spec without
// loading a model.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dtm {

struct TrainingPhase {
  bool masked = true;  // the pruning masks hold (pruned weights stay exactly 0)
  int64_t steps = 0;
};

// "masked:450,unmasked:50" (the paper's round) -> two phases. INVALID_ARGUMENT naming the item for
// anything else: an unknown phase kind, a step count that is not a positive integer, no phase.
StatusOr<std::vector<TrainingPhase>> ParseTrainingPhases(std::string_view text);

// Steps of every phase.
int64_t TotalSteps(const std::vector<TrainingPhase>& phases);

}  // namespace dtm
