#include "coordinator/sparsify_run.h"

#include <utility>

#include "common/compression_config.h"

namespace dtm {
namespace {

std::string RoundName(int round) { return "round " + std::to_string(round); }

// Every component's sparsity before round 1.
std::vector<double> StartingSparsities(const SparsifyRunPlan& plan) {
  std::vector<double> current;
  for (const SparsifyRoundDriver::Component& c : plan.components) current.push_back(c.current);
  return current;
}

// What is stored about `round` (an empty record when nothing is).
const SparsifyRoundRecord& StoredRound(const SparsifyRunRecord& record, int round) {
  static const SparsifyRoundRecord kNothing;
  return round <= static_cast<int>(record.rounds.size()) ? record.rounds[round - 1] : kNothing;
}

// Uniform rounds are not probed (SPEC: probing is the balanced allocation's input), so their rows
// carry no prediction: predicted_fdt75 and min_fdt75 stay 0.
v1::SparsityAllocation UniformAllocation(const SparsifyRunPlan& plan, const std::vector<double>& current,
                                         double step) {
  v1::SparsityAllocation out;
  out.set_method("uniform");
  out.set_step(step);
  out.set_achieved_step(step);
  out.set_completion_len(static_cast<uint32_t>(plan.completion_len));
  out.set_num_layers(static_cast<uint32_t>(plan.num_layers));
  for (size_t i = 0; i < plan.components.size(); ++i) {
    v1::ComponentSparsity& row = *out.add_components();
    row.set_component(plan.components[i].name);
    row.set_params(plan.components[i].params);
    row.set_current(current[i]);
    row.set_extra(step);
    row.set_target(current[i] + step);
  }
  return out;
}

// Round `round`'s allocation from the components' sparsity before it, or the probes it still
// needs (`*missing`, the round's probe configs, when some are not stored).
StatusOr<std::optional<v1::SparsityAllocation>> RoundAllocation(const SparsifyRunPlan& plan, int round,
                                                                 const std::vector<double>& current,
                                                                 const SparsifyRoundRecord& stored,
                                                                 std::vector<std::string>* missing) {
  const double step = plan.schedule[round - 1];
  if (plan.uniform) return std::optional<v1::SparsityAllocation>(UniformAllocation(plan, current, step));
  std::vector<SparsifyRoundDriver::Component> components = plan.components;
  for (size_t i = 0; i < components.size(); ++i) components[i].current = current[i];
  SparsifyRoundDriver driver(std::move(components), step, plan.probe_multiples, /*uniform=*/false,
                             plan.completion_len, plan.num_layers);
  StatusOr<std::optional<std::vector<std::string>>> next = driver.NextStage(stored.probes);
  if (!next.ok()) return Status(next.status().code(), RoundName(round) + ": " + next.status().message());
  if (next->has_value()) {
    *missing = std::move(**next);
    return std::optional<v1::SparsityAllocation>();
  }
  return driver.Allocation(stored.probes);
}

std::vector<double> TargetsOf(const v1::SparsityAllocation& allocation) {
  std::vector<double> targets;
  for (const v1::ComponentSparsity& row : allocation.components()) targets.push_back(row.target());
  return targets;
}

// The allocation's targets as one canonical config; components at 0 are left out.
StatusOr<std::string> PruneConfigOf(const v1::SparsityAllocation& allocation, int num_layers) {
  std::string text;
  for (const v1::ComponentSparsity& row : allocation.components()) {
    if (row.target() <= 0) continue;
    CompressionMethod prune;
    prune.kind = MethodKind::kPrune;
    prune.fraction = row.target();
    if (!text.empty()) text += ",";
    text += row.component() + "=" + prune.ToString();
  }
  ASSIGN_OR_RETURN(CompressionConfig config, ParseCompressionConfig(text, num_layers));
  return config.Canonical();
}

}  // namespace

std::vector<double> PaperSparsifySchedule() { return {0.20, 0.15, 0.10, 0.10, 0.05, 0.05, 0.05, 0.05}; }

Status CheckSparsifyRunPlan(const SparsifyRunPlan& plan) {
  if (plan.schedule.empty()) return InvalidArgumentError("sparsify.schedule: no rounds");
  if (plan.components.empty()) return InvalidArgumentError("sparsify.components: no component to prune");
  double total_step = 0;
  for (size_t i = 0; i < plan.schedule.size(); ++i) {
    const double step = plan.schedule[i];
    if (!(step > 0 && step < 1)) {
      return InvalidArgumentError("sparsify.schedule[" + std::to_string(i) +
                                  "]: a step must be in (0, 1) (0.05 = 5%), got " + std::to_string(step));
    }
    total_step += step;
  }
  double params = 0, pruned = 0;
  for (const SparsifyRoundDriver::Component& c : plan.components) {
    params += static_cast<double>(c.params);
    pruned += static_cast<double>(c.params) * c.current;
    if (plan.uniform && c.current + total_step >= 1) {
      return InvalidArgumentError("sparsify.schedule: the steps add up to " + SparsityPercent(total_step) +
                                  ", which with the " + SparsityPercent(c.current) + " of " + c.name +
                                  " already pruned leaves it nothing: a uniform run prunes every step from "
                                  "every component");
    }
  }
  const double start = pruned / params;
  if (start + total_step >= 1) {
    return InvalidArgumentError("sparsify.schedule: the steps add up to " + SparsityPercent(total_step) +
                                (start > 0 ? " on top of the " + SparsityPercent(start) + " already pruned on average"
                                           : "") +
                                ": the run must end below 100%");
  }
  return OkStatus();
}

std::string RoundModelDir(const SparsifyRunPlan& plan, int round) {
  if (round == static_cast<int>(plan.schedule.size())) return plan.output + "/final";
  return plan.output + "/round-" + std::to_string(round);
}

std::string RoundInputModel(const SparsifyRunPlan& plan, int round) {
  return round <= 1 ? plan.model : RoundModelDir(plan, round - 1);
}

const char* SparsifyStageName(SparsifyStage stage) {
  switch (stage) {
    case SparsifyStage::kProbe: return "probe";
    case SparsifyStage::kTrain: return "train";
    case SparsifyStage::kEvaluate: return "evaluate";
    case SparsifyStage::kDone: return "done";
  }
  return "unknown";
}

StatusOr<SparsifyAction> NextSparsifyAction(const SparsifyRunPlan& plan, const SparsifyRunRecord& record) {
  const int rounds = static_cast<int>(plan.schedule.size());
  std::vector<double> current = StartingSparsities(plan);
  for (int round = 1; round <= rounds; ++round) {
    const SparsifyRoundRecord& stored = StoredRound(record, round);
    SparsifyAction action;
    action.round = round;
    action.model = RoundInputModel(plan, round);
    ASSIGN_OR_RETURN(std::optional<v1::SparsityAllocation> allocation,
                     RoundAllocation(plan, round, current, stored, &action.configs));
    if (!allocation.has_value()) {
      action.stage = SparsifyStage::kProbe;
      return action;
    }
    action.allocation = *allocation;
    if (!stored.trained_fingerprint.has_value()) {
      action.stage = SparsifyStage::kTrain;
      ASSIGN_OR_RETURN(action.prune_config, PruneConfigOf(*allocation, plan.num_layers));
      action.output = RoundModelDir(plan, round);
      action.remask = round == rounds;
      return action;
    }
    if (!stored.evaluated) {
      action.stage = SparsifyStage::kEvaluate;
      action.model = RoundModelDir(plan, round);
      return action;
    }
    current = TargetsOf(*allocation);
  }
  return SparsifyAction();  // kDone
}

StatusOr<std::vector<v1::SparsityAllocation>> SparsifyRunAllocations(const SparsifyRunPlan& plan,
                                                                    const SparsifyRunRecord& record) {
  std::vector<double> current = StartingSparsities(plan);
  std::vector<v1::SparsityAllocation> out;
  for (int round = 1; round <= static_cast<int>(plan.schedule.size()); ++round) {
    std::vector<std::string> missing;
    ASSIGN_OR_RETURN(std::optional<v1::SparsityAllocation> allocation,
                     RoundAllocation(plan, round, current, StoredRound(record, round), &missing));
    if (!allocation.has_value()) break;
    current = TargetsOf(*allocation);
    out.push_back(*std::move(allocation));
  }
  return out;
}

}  // namespace dtm
