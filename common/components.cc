#include "common/components.h"

#include <charconv>

namespace dtm {
namespace {

constexpr std::array<std::string_view, kComponentKindsPerLayer> kSuffixes = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj",
};
constexpr std::string_view kLayerPrefix = "model.layers.";

}  // namespace

std::string_view ComponentKindSuffix(ComponentKind kind) { return kSuffixes[static_cast<int>(kind)]; }

LinearInputSite InputSiteOf(ComponentKind kind) {
  switch (kind) {
    case ComponentKind::kQ:
    case ComponentKind::kK:
    case ComponentKind::kV: return LinearInputSite::kAttentionIn;
    case ComponentKind::kO: return LinearInputSite::kAttentionOut;
    case ComponentKind::kGate:
    case ComponentKind::kUp: return LinearInputSite::kMlpIn;
    case ComponentKind::kDown: return LinearInputSite::kMlpHidden;
  }
  return LinearInputSite::kAttentionIn;
}

std::string ComponentId::Name() const {
  return std::string(kLayerPrefix) + std::to_string(layer) + "." + std::string(ComponentKindSuffix(kind));
}

StatusOr<ComponentId> ParseComponentName(std::string_view name, int num_layers) {
  auto unknown = [&](const std::string& why) {
    return InvalidArgumentError("unknown component '" + std::string(name) + "': " + why);
  };
  if (name.substr(0, kLayerPrefix.size()) != kLayerPrefix) {
    return unknown("expected model.layers.<i>.<self_attn.{q,k,v,o}_proj|mlp.{gate,up,down}_proj>");
  }
  std::string_view rest = name.substr(kLayerPrefix.size());
  size_t dot = rest.find('.');
  if (dot == std::string_view::npos || dot == 0) return unknown("no layer index");
  int layer = -1;
  auto [ptr, ec] = std::from_chars(rest.data(), rest.data() + dot, layer);
  if (ec != std::errc() || ptr != rest.data() + dot) return unknown("layer index is not a number");
  if (layer < 0 || layer >= num_layers) {
    return unknown("layer " + std::to_string(layer) + " out of range, the model has " +
                   std::to_string(num_layers) + " layers");
  }
  std::string_view suffix = rest.substr(dot + 1);
  for (int k = 0; k < kComponentKindsPerLayer; ++k) {
    if (kSuffixes[k] == suffix) return ComponentId{layer, static_cast<ComponentKind>(k)};
  }
  return unknown("'" + std::string(suffix) +
                 "' is not one of self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj");
}

std::vector<ComponentId> AllComponents(int num_layers) {
  std::vector<ComponentId> out;
  out.reserve(static_cast<size_t>(num_layers) * kComponentKindsPerLayer);
  for (int l = 0; l < num_layers; ++l) {
    for (int k = 0; k < kComponentKindsPerLayer; ++k) out.push_back({l, static_cast<ComponentKind>(k)});
  }
  return out;
}

}  // namespace dtm
