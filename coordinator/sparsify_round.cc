#include "coordinator/sparsify_round.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <utility>

#include "common/components.h"
#include "common/compression_config.h"
#include "coordinator/sparsity_allocation.h"

namespace dtm {
namespace {

constexpr const char* kPreviousField = "job spec: sparsify-round.previous: ";
// Probe targets are rounded to millionths so that configs read well ("prune:0.05", not
// "prune:0.049999999999999996") and meet other jobs' configs in the cache.
constexpr double kTargetsPerUnit = 1e6;

Status PreviousError(const std::string& path, const std::string& why) {
  return InvalidArgumentError(kPreviousField + path + ": " + why);
}

std::string ShortFingerprint(const nlohmann::json& allocation) {
  auto it = allocation.find("model_fingerprint");
  if (it == allocation.end() || !it->is_string()) return "unknown";
  return it->get<std::string>().substr(0, 12);
}

}  // namespace

std::string SparsityPercent(double fraction) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g%%", fraction * 100);
  return buf;
}

StatusOr<std::map<std::string, double>> ReadPreviousRound(const std::string& path, const ModelGeometry& geometry,
                                                          const ReadLimits& limits) {
  StatusOr<nlohmann::json> read = ReadJsonFile(path, limits);
  if (!read.ok() && read.status().code() == StatusCode::kDataLoss) {
    return PreviousError(path, "is not JSON; expected `dtmctl results ROUND --format json`");
  }
  if (!read.ok()) {
    // The reader's messages start with the path, which PreviousError names already.
    std::string why = read.status().message();
    if (why.rfind(path + ": ", 0) == 0) why = why.substr(path.size() + 2);
    return PreviousError(path, "cannot be read: " + why);
  }
  const nlohmann::json& doc = *read;
  auto alloc_it = doc.is_object() ? doc.find("allocation") : doc.end();
  if (!doc.is_object() || alloc_it == doc.end() || !alloc_it->is_object()) {
    return PreviousError(path,
                         "holds no sparsify-round allocation; write it with `dtmctl results ROUND --format json > FILE`");
  }
  const nlohmann::json& allocation = *alloc_it;
  auto layers = allocation.find("num_layers");
  if (layers == allocation.end() || !layers->is_number_integer()) {
    return PreviousError(path, "allocation.num_layers is missing or not an integer");
  }
  if (layers->get<int64_t>() != geometry.num_layers) {
    return PreviousError(path, "is a round of a model with " + std::to_string(layers->get<int64_t>()) +
                                   " layers (fingerprint " + ShortFingerprint(allocation) + "), but this job's model has " +
                                   std::to_string(geometry.num_layers) + ": the file is for another model");
  }
  auto components = allocation.find("components");
  if (components == allocation.end() || !components->is_array()) {
    return PreviousError(path, "allocation.components is missing or not a list");
  }
  std::map<std::string, double> current;
  for (size_t i = 0; i < components->size(); ++i) {
    const nlohmann::json& row = (*components)[i];
    const std::string where = "allocation.components[" + std::to_string(i) + "]";
    if (!row.is_object() || !row.contains("component") || !row["component"].is_string() || !row.contains("target") ||
        !row["target"].is_number() || !row.contains("params") || !row["params"].is_number_unsigned()) {
      return PreviousError(path, where + " needs component (string), params (integer) and target (number)");
    }
    const std::string name = row["component"].get<std::string>();
    StatusOr<ComponentId> id = ParseComponentName(name, geometry.num_layers);
    if (!id.ok()) return PreviousError(path, where + ": " + id.status().message());
    const double target = row["target"].get<double>();
    if (!(target >= 0 && target < 1)) {
      return PreviousError(path, where + " (" + name + "): target must be in [0, 1), got " + row["target"].dump());
    }
    const uint64_t params = row["params"].get<uint64_t>();
    auto known = geometry.component_params.find(name);
    if (known != geometry.component_params.end() && known->second != params) {
      return PreviousError(path, name + " has " + std::to_string(params) + " weights there but " +
                                     std::to_string(known->second) +
                                     " in this job's model: the file is for another model (fingerprint " +
                                     ShortFingerprint(allocation) + ")");
    }
    if (!current.emplace(name, target).second) return PreviousError(path, name + " is listed twice");
  }
  return current;
}

SparsifyRoundDriver::SparsifyRoundDriver(std::vector<Component> components, double step,
                                         std::vector<double> probe_multiples, bool uniform, int64_t completion_len,
                                         int num_layers)
    : components_(std::move(components)),
      step_(step),
      uniform_(uniform),
      completion_len_(completion_len),
      num_layers_(num_layers) {
  for (const Component& c : components_) {
    std::vector<Probe> probes;
    for (double multiple : probe_multiples) {
      const double target = std::round((c.current + multiple * step_) * kTargetsPerUnit) / kTargetsPerUnit;
      const double extra = target - c.current;
      // Beyond the component's room the curve's end point (everything pruned, FDT75 0) stands in.
      if (extra <= 0 || target >= 1) continue;
      CompressionMethod prune;
      prune.kind = MethodKind::kPrune;
      prune.fraction = target;
      probes.push_back({c.name + "=" + prune.ToString(), extra});
    }
    probes_.push_back(std::move(probes));
  }
}

std::vector<std::string> SparsifyRoundDriver::ProbeConfigs() const {
  std::vector<std::string> configs;
  for (const auto& probes : probes_) {
    for (const Probe& p : probes) configs.push_back(p.config);
  }
  return configs;
}

bool SparsifyRoundDriver::AllProbesIn(const std::map<std::string, v1::Metrics>& evaluated) const {
  for (const auto& probes : probes_) {
    for (const Probe& p : probes) {
      if (evaluated.count(p.config) == 0) return false;
    }
  }
  return true;
}

StatusOr<std::optional<std::vector<std::string>>> SparsifyRoundDriver::NextStage(
    const std::map<std::string, v1::Metrics>& evaluated) {
  if (!AllProbesIn(evaluated)) return std::optional<std::vector<std::string>>(ProbeConfigs());
  // Solved here as well as in Allocation so that a round the solver refuses fails instead of
  // succeeding without an answer.
  RETURN_IF_ERROR(Solve(evaluated).status());
  return std::optional<std::vector<std::string>>();
}

std::vector<v1::ConfigResult> SparsifyRoundDriver::Results(const std::map<std::string, v1::Metrics>& evaluated) const {
  return ResultRowsOf(ProbeConfigs(), evaluated);
}

std::optional<v1::SparsityAllocation> SparsifyRoundDriver::Allocation(
    const std::map<std::string, v1::Metrics>& evaluated) const {
  if (!AllProbesIn(evaluated)) return std::nullopt;
  StatusOr<v1::SparsityAllocation> allocation = Solve(evaluated);
  if (!allocation.ok()) return std::nullopt;
  return std::move(allocation).value();
}

StatusOr<v1::SparsityAllocation> SparsifyRoundDriver::Solve(const std::map<std::string, v1::Metrics>& evaluated) const {
  std::vector<ComponentCurve> curves;
  for (size_t i = 0; i < components_.size(); ++i) {
    ComponentCurve curve;
    curve.name = components_[i].name;
    curve.params = static_cast<double>(components_[i].params);
    curve.current_sparsity = components_[i].current;
    for (const Probe& p : probes_[i]) curve.probes.emplace_back(p.extra, evaluated.at(p.config).fdt75());
    curves.push_back(std::move(curve));
  }
  AllocationOptions options;
  options.step = step_;
  options.completion_len = static_cast<double>(completion_len_);
  ASSIGN_OR_RETURN(dtm::Allocation solved,
                   uniform_ ? AllocateUniform(curves, options) : AllocateBalancedSparsity(curves, options));
  v1::SparsityAllocation out;
  out.set_method(uniform_ ? "uniform" : "balanced");
  out.set_step(step_);
  out.set_achieved_step(solved.achieved_step);
  out.set_min_fdt75(solved.min_fdt75);
  out.set_completion_len(static_cast<uint32_t>(completion_len_));
  out.set_num_layers(static_cast<uint32_t>(num_layers_));
  for (size_t i = 0; i < components_.size(); ++i) {
    v1::ComponentSparsity& row = *out.add_components();
    row.set_component(components_[i].name);
    row.set_params(components_[i].params);
    row.set_current(components_[i].current);
    row.set_extra(solved.extra[i]);
    row.set_target(components_[i].current + solved.extra[i]);
    row.set_predicted_fdt75(solved.predicted_fdt75[i]);
  }
  return out;
}

StatusOr<std::vector<SparsifyRoundDriver::Component>> SizedComponents(const std::vector<std::string>& names,
                                                                      const ModelGeometry& geometry,
                                                                      const std::map<std::string, double>& current,
                                                                      const std::string& who) {
  std::vector<SparsifyRoundDriver::Component> components;
  for (const std::string& name : names) {
    auto params = geometry.component_params.find(name);
    if (params == geometry.component_params.end() || params->second == 0) {
      return FailedPreconditionError("model: the size of " + name +
                                     " is unknown (its workers did not report component sizes and its "
                                     "config.json is not readable here); " + who + " needs it");
    }
    auto it = current.find(name);
    components.push_back({name, params->second, it == current.end() ? 0.0 : it->second});
  }
  return components;
}

StatusOr<std::unique_ptr<JobDriver>> CreateSparsifyRoundDriver(const JobSpec& spec, const ModelGeometry& geometry,
                                                               const ReadLimits& limits) {
  ASSIGN_OR_RETURN(std::vector<std::string> names,
                   SelectComponents(spec.components, geometry.num_layers, "sparsify-round.components"));
  std::map<std::string, double> current;
  if (!spec.previous.empty()) {
    ASSIGN_OR_RETURN(current, ReadPreviousRound(spec.previous, geometry, limits));
  }
  ASSIGN_OR_RETURN(std::vector<SparsifyRoundDriver::Component> components,
                   SizedComponents(names, geometry, current, "sparsify-round"));
  double total = 0;
  double left = 0;
  for (const SparsifyRoundDriver::Component& c : components) {
    if (spec.uniform_allocation && 1 - c.current <= spec.step) {
      return InvalidArgumentError("job spec: sparsify-round.step: " + SparsityPercent(spec.step) +
                                  " exceeds what is left to prune of " + c.name + " (" + SparsityPercent(c.current) +
                                  " pruned already); a uniform round prunes the step from every component");
    }
    total += static_cast<double>(c.params);
    left += static_cast<double>(c.params) * (1 - c.current);
  }
  if (spec.step >= left / total) {
    return InvalidArgumentError("job spec: sparsify-round.step: " + SparsityPercent(spec.step) +
                                " exceeds what is left to prune: the selected components are " +
                                SparsityPercent(1 - left / total) + " sparse on average, leaving " + SparsityPercent(left / total));
  }
  return std::unique_ptr<JobDriver>(new SparsifyRoundDriver(std::move(components), spec.step, spec.probe_multiples,
                                                            spec.uniform_allocation,
                                                            spec.completion_len, geometry.num_layers));
}

}  // namespace dtm
