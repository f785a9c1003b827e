// Components: the linear weights of a Llama model that dtm compresses one at a time.
//
// A component is named by its Hugging Face module path without ".weight", e.g.
// "model.layers.3.self_attn.k_proj". This file is the one table from component kind to HF name.
#pragma once

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dtm {

enum class ComponentKind : int { kQ = 0, kK, kV, kO, kGate, kUp, kDown };
inline constexpr int kComponentKindsPerLayer = 7;

// "self_attn.q_proj", ..., "mlp.down_proj".
std::string_view ComponentKindSuffix(ComponentKind kind);

// The input site that feeds a component: q/k/v share the attention input, gate/up the MLP input.
// GPTQ Hessians are collected per site.
enum class LinearInputSite : int { kAttentionIn = 0, kAttentionOut, kMlpIn, kMlpHidden };
LinearInputSite InputSiteOf(ComponentKind kind);

struct ComponentId {
  int layer = 0;
  ComponentKind kind = ComponentKind::kQ;

  // "model.layers.{layer}.{suffix}"
  std::string Name() const;
  // Index in AllComponents() order: layer-major, kinds in enum order.
  int Index() const { return layer * kComponentKindsPerLayer + static_cast<int>(kind); }
  bool operator==(const ComponentId& o) const { return layer == o.layer && kind == o.kind; }
  bool operator!=(const ComponentId& o) const { return !(*this == o); }
};

// Parses a component name; `num_layers` bounds the layer index. The error names the component.
StatusOr<ComponentId> ParseComponentName(std::string_view name, int num_layers);

// Every component of a model with `num_layers` layers, layer-major.
std::vector<ComponentId> AllComponents(int num_layers);

}  // namespace dtm
