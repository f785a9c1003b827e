#include "coordinator/sparsity_allocation.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <set>
#include <sstream>
#include <string>

namespace dtm {
namespace {

using Points = std::vector<std::pair<double, double>>;

// 15 significant digits where they read back as the same double (0.1 stays "0.1"), else 17, so that a
// message never shows a different number than the one checked.
std::string Num(double v) {
  for (int digits : {15, 17}) {
    std::ostringstream out;
    out.precision(digits);
    out << v;
    if (digits == 17 || std::strtod(out.str().c_str(), nullptr) == v) return out.str();
  }
  return {};
}

Status BadComponent(size_t index, const ComponentCurve& c, const std::string& why) {
  return InvalidArgumentError("sparsity allocation: component " + std::to_string(index) + " ('" + c.name +
                              "'): " + why);
}

Status CheckOptions(const AllocationOptions& options) {
  if (!std::isfinite(options.step) || options.step <= 0 || options.step >= 1)
    return InvalidArgumentError("sparsity allocation: step " + Num(options.step) + " must be in (0, 1)");
  if (!std::isfinite(options.completion_len) || options.completion_len <= 0) {
    return InvalidArgumentError("sparsity allocation: completion_len " + Num(options.completion_len) +
                                " must be positive");
  }
  return OkStatus();
}

Status CheckProbes(size_t index, const ComponentCurve& c, double completion_len) {
  const double room = 1 - c.current_sparsity;
  for (const auto& [s, fdt] : c.probes) {
    // A probe beyond the room would describe pruning more than the whole component.
    if (!std::isfinite(s) || s <= 0 || s > room) {
      return BadComponent(index, c, "probe extra sparsity " + Num(s) + " is not in (0, " + Num(room) +
                                        "] (1 - current_sparsity)");
    }
    if (!std::isfinite(fdt) || fdt < 0 || fdt > completion_len) {
      return BadComponent(index, c, "probe FDT75 " + Num(fdt) + " at extra sparsity " + Num(s) +
                                        " is not in [0, " + Num(completion_len) + "] (completion_len)");
    }
  }
  return OkStatus();
}

Status CheckComponent(size_t index, const ComponentCurve& c, double completion_len) {
  if (c.name.empty()) return BadComponent(index, c, "name is empty");
  if (!std::isfinite(c.params) || c.params <= 0)
    return BadComponent(index, c, "params " + Num(c.params) + " must be positive");
  if (!std::isfinite(c.current_sparsity) || c.current_sparsity < 0 || c.current_sparsity >= 1) {
    return BadComponent(index, c, "current_sparsity " + Num(c.current_sparsity) + " is not in [0, 1)");
  }
  return CheckProbes(index, c, completion_len);
}

// Everything but the check of step against the room left, which the two allocations check differently.
Status CheckInputs(const std::vector<ComponentCurve>& components, const AllocationOptions& options) {
  RETURN_IF_ERROR(CheckOptions(options));
  if (components.empty()) return InvalidArgumentError("sparsity allocation: no components");
  std::set<std::string> names;
  for (size_t i = 0; i < components.size(); ++i) {
    RETURN_IF_ERROR(CheckComponent(i, components[i], options.completion_len));
    if (!names.insert(components[i].name).second) return BadComponent(i, components[i], "name repeats");
  }
  return OkStatus();
}

double TotalParams(const std::vector<ComponentCurve>& components) {
  double total = 0;
  for (const ComponentCurve& c : components) total += c.params;
  return total;
}

// sum_i s_i * params_i / sum_j params_j, summed in component order so that it is reproducible.
double WeightedAverage(const std::vector<ComponentCurve>& components, const std::vector<double>& s) {
  double sum = 0;
  for (size_t i = 0; i < components.size(); ++i) sum += components[i].params * s[i];
  return sum / TotalParams(components);
}

std::vector<double> Rooms(const std::vector<ComponentCurve>& components) {
  std::vector<double> rooms;
  for (const ComponentCurve& c : components) rooms.push_back(1 - c.current_sparsity);
  return rooms;
}

// The largest s with curve(s) >= t (strict = false), or the smallest s with curve(s) <= t, i.e. the limit
// of the former from above t (strict = true). They differ only where the curve is flat at t: the right and
// the left end of that plateau. Requires t <= completion_len (strict: t < completion_len).
double Reach(const Points& curve, double t, bool strict) {
  size_t k = 0;  // the last point above the level: the curve starts at completion_len
  for (size_t i = 0; i < curve.size(); ++i) {
    if (strict ? curve[i].second > t : curve[i].second >= t) k = i;
  }
  if (k + 1 == curve.size()) return curve[k].first;
  const auto& [x0, y0] = curve[k];
  const auto& [x1, y1] = curve[k + 1];
  // y0 >= t > y1 (or y0 > t >= y1): the segment is not flat and crosses t.
  return x0 + (x1 - x0) * (y0 - t) / (y0 - y1);
}

std::vector<double> ReachAll(const std::vector<Points>& curves, double t, bool strict) {
  std::vector<double> s;
  for (const Points& curve : curves) s.push_back(Reach(curve, t, strict));
  return s;
}

// Every FDT75 value of every curve: between two consecutive ones each Reach is linear in t.
std::vector<double> Levels(const std::vector<Points>& curves) {
  std::vector<double> levels;
  for (const Points& curve : curves)
    for (const auto& point : curve) levels.push_back(point.second);
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  return levels;
}

// Two allocations lo and hi, both at the optimal level t* or bracketing it on one linear piece of every
// curve, with average(lo) <= step <= average(hi). Any blend of them then keeps every component at the
// same FDT75, and one blend meets step.
std::pair<std::vector<double>, std::vector<double>> Bracket(const std::vector<ComponentCurve>& components,
                                                            const std::vector<Points>& curves, double step,
                                                            double completion_len) {
  auto average = [&](const std::vector<double>& s) { return WeightedAverage(components, s); };
  std::vector<double> at_top = ReachAll(curves, completion_len, false);
  // Components can absorb the whole step without any predicted loss: t* is the completion length.
  if (average(at_top) >= step) return {std::vector<double>(components.size(), 0.0), at_top};

  // Bisection over the levels for a < b consecutive with average(Reach(a)) >= step > average(Reach(b)).
  // Levels start at 0 (every curve ends there; Reach(0) is the whole room, >= step) and end at
  // completion_len (< step, above). average(Reach(t)) is non-increasing in t.
  const std::vector<double> levels = Levels(curves);
  size_t a = 0, b = levels.size() - 1;
  while (b - a > 1) {
    const size_t mid = a + (b - a) / 2;
    (average(ReachAll(curves, levels[mid], false)) >= step ? a : b) = mid;
  }
  std::vector<double> above_a = ReachAll(curves, levels[a], true);
  // Plateaus at level a alone cover step: t* = a, between the plateaus' left and right ends.
  if (average(above_a) <= step) return {above_a, ReachAll(curves, levels[a], false)};
  // Otherwise t* lies strictly inside (a, b), where every Reach is one linear function of t running from
  // above_a (t -> a) to Reach(b).
  return {ReachAll(curves, levels[b], false), above_a};
}

Allocation Finish(const std::vector<ComponentCurve>& components, std::vector<double> extra,
                  double completion_len) {
  Allocation allocation;
  for (size_t i = 0; i < components.size(); ++i)
    allocation.predicted_fdt75.push_back(InterpolateFdt(components[i], extra[i], completion_len));
  allocation.min_fdt75 =
      *std::min_element(allocation.predicted_fdt75.begin(), allocation.predicted_fdt75.end());
  allocation.achieved_step = WeightedAverage(components, extra);
  allocation.extra = std::move(extra);
  return allocation;
}

}  // namespace

std::vector<std::pair<double, double>> FdtCurvePoints(const ComponentCurve& component, double completion_len) {
  const double room = 1 - component.current_sparsity;
  Points points = {{0.0, completion_len}, {room, 0.0}};
  for (const auto& probe : component.probes)
    if (probe.first > 0 && probe.first <= room) points.push_back(probe);
  std::sort(points.begin(), points.end());
  Points curve;
  for (const auto& [s, fdt] : points) {
    // Sorted by (s, fdt): the first point at an s holds the smallest value there; the running minimum
    // makes more pruning never predict a longer FDT75.
    if (!curve.empty() && curve.back().first == s) continue;
    curve.emplace_back(s, curve.empty() ? fdt : std::min(fdt, curve.back().second));
  }
  return curve;
}

double InterpolateFdt(const ComponentCurve& component, double s, double completion_len) {
  const Points curve = FdtCurvePoints(component, completion_len);
  if (s <= curve.front().first) return curve.front().second;
  if (s >= curve.back().first) return curve.back().second;
  const auto upper = std::upper_bound(curve.begin(), curve.end(), s,
                                      [](double v, const auto& point) { return v < point.first; });
  const auto& [x1, y1] = *upper;
  const auto& [x0, y0] = *(upper - 1);
  return y0 + (y1 - y0) * (s - x0) / (x1 - x0);
}

StatusOr<Allocation> AllocateBalancedSparsity(const std::vector<ComponentCurve>& components,
                                              const AllocationOptions& options) {
  RETURN_IF_ERROR(CheckInputs(components, options));
  const double left = WeightedAverage(components, Rooms(components));
  if (options.step > left) {
    return InvalidArgumentError("sparsity allocation: step " + Num(options.step) +
                                " exceeds what is left to prune: at most " + Num(left) +
                                " (the params-weighted average of 1 - current_sparsity)");
  }
  std::vector<Points> curves;
  for (const ComponentCurve& c : components) curves.push_back(FdtCurvePoints(c, options.completion_len));

  const auto [lo, hi] = Bracket(components, curves, options.step, options.completion_len);
  // One fraction theta for all components: each gets the same share of its range [lo_i, hi_i], which
  // meets step exactly (up to rounding) and is symmetric between components.
  const double w_lo = WeightedAverage(components, lo);
  const double w_hi = WeightedAverage(components, hi);
  const double theta = w_hi > w_lo ? std::clamp((options.step - w_lo) / (w_hi - w_lo), 0.0, 1.0) : 0.0;
  std::vector<double> extra;
  for (size_t i = 0; i < components.size(); ++i) extra.push_back(lo[i] + theta * (hi[i] - lo[i]));
  return Finish(components, std::move(extra), options.completion_len);
}

StatusOr<Allocation> AllocateUniform(const std::vector<ComponentCurve>& components,
                                     const AllocationOptions& options) {
  RETURN_IF_ERROR(CheckInputs(components, options));
  for (size_t i = 0; i < components.size(); ++i) {
    const double room = 1 - components[i].current_sparsity;
    if (options.step > room) {
      return BadComponent(i, components[i], "has " + Num(room) + " left to prune, less than step " +
                                                Num(options.step));
    }
  }
  return Finish(components, std::vector<double>(components.size(), options.step), options.completion_len);
}

}  // namespace dtm
