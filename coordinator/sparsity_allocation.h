// Per-component sparsity increases for one balanced sparsification round (SPEC "Searches", "Balanced
// sparsification round"; paper Sec. 4.1, "Pruning of LLMs").
//
// Pure and deterministic, with nothing but the standard library: the coordinator decides a round from
// FDT75 probes that workers measured, and the same probes must always give the same masks.
//
// Each component's FDT75 as a function of its extra sparsity s is the curve through (0, completion
// length), its probes and (1 - current sparsity, 0), sorted by s, made non-increasing and interpolated
// linearly. The balanced allocation maximises the smallest predicted FDT75 over the components subject to
// the parameter-weighted average of the increases being exactly `step`.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "common/status.h"

namespace dtm {

// One component (e.g. one layer's attention or MLP weights) and its probes for this round.
struct ComponentCurve {
  std::string name;          // unique, non-empty; names the component in errors
  double params = 0;         // parameter count, > 0: the weight of the component in the average
  double current_sparsity = 0;  // fraction already pruned, in [0, 1)
  // (extra sparsity s, measured FDT75) with s in (0, 1 - current_sparsity] and FDT75 in
  // [0, completion_len]; SPEC probes s = step/2 and 3*step/2 (as far as the component has room).
  std::vector<std::pair<double, double>> probes;
};

struct AllocationOptions {
  double step = 0;            // target increase of the param-weighted average sparsity, in (0, 1)
  double completion_len = 0;  // FDT75 with nothing pruned (the curve's value at s = 0), > 0
};

struct Allocation {
  std::vector<double> extra;            // s_i per component, in the order given
  std::vector<double> predicted_fdt75;  // InterpolateFdt at extra[i]
  double min_fdt75 = 0;                 // min of predicted_fdt75
  double achieved_step = 0;             // sum_i extra[i] * params_i / sum_j params_j
};

// The points of a component's curve after sorting, merging and the running minimum: starts at
// (0, completion_len), ends at (1 - current_sparsity, 0), strictly increasing in s, non-increasing in
// FDT75. Probes at the same s (including one at 1 - current_sparsity, which meets the fixed end point)
// merge into one point with the smallest of their values, so the curve is a continuous function. Does
// not validate: probes with s outside (0, 1 - current_sparsity) other than the end are dropped.
std::vector<std::pair<double, double>> FdtCurvePoints(const ComponentCurve& component, double completion_len);

// The curve above at extra sparsity s; completion_len for s <= 0, 0 for s >= 1 - current_sparsity.
double InterpolateFdt(const ComponentCurve& component, double s, double completion_len);

// The allocation that maximises min_i FDT75_i(s_i) subject to sum_i s_i * params_i / sum_j params_j =
// step (to rounding) and 0 <= s_i <= 1 - current_sparsity_i.
//
// The optimum t* is found exactly (the curves are piecewise linear); every component then predicts
// FDT75 = t*. Where several allocations reach t* (components on a plateau at t*, or t* = completion_len),
// each such component gets the same fraction of its room at that level, so the choice is symmetric and
// the increases grow monotonically with step.
//
// INVALID_ARGUMENT, naming the component and field, for: no components, an empty or repeated name,
// params <= 0, current_sparsity outside [0, 1), a probe s outside (0, 1 - current_sparsity] or FDT75
// outside [0, completion_len], step outside (0, 1), completion_len <= 0, non-finite numbers, or a step
// larger than what is left to prune on average.
StatusOr<Allocation> AllocateBalancedSparsity(const std::vector<ComponentCurve>& components,
                                              const AllocationOptions& options);

// The paper's uniform baseline: every component gets extra sparsity `step`. Same validation as above,
// and INVALID_ARGUMENT, naming the component, if one has less than `step` left to prune.
StatusOr<Allocation> AllocateUniform(const std::vector<ComponentCurve>& components,
                                     const AllocationOptions& options);

}  // namespace dtm
