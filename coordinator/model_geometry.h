// What the coordinator knows of a model's shape without loading it: its layer count and the size of
// each component. Job drivers check component names against the first and weigh a sparsification
// round's average by the second.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "common/jsonl.h"

namespace dtm {

struct ModelGeometry {
  int num_layers = 0;
  // Weights per component name ("model.layers.0.mlp.up_proj"); empty when unknown (a worker older
  // than RegisterWorkerRequest.component_params, or a config without the sizes).
  std::map<std::string, uint64_t> component_params;
};

// From MODEL_PATH/config.json, for a coordinator that can read the model folder: nullopt when it is
// not there or has no integer num_hidden_layers. The component sizes follow the Llama shapes
// (q, o: hidden x heads*head_dim; k, v: hidden x kv_heads*head_dim; gate, up, down: hidden x
// intermediate) and are left empty when a size is missing. Workers report the sizes of the tensors
// they load, which tests check against these. config.json is read within `limits`.
std::optional<ModelGeometry> ReadModelGeometry(const std::string& model_path, const ReadLimits& limits = {});

}  // namespace dtm
