#include "coordinator/model_geometry.h"

#include <nlohmann/json.hpp>

#include <filesystem>

#include "common/components.h"

namespace dtm {
namespace {

// A positive integer field, or 0 when absent or of another type.
uint64_t PositiveField(const nlohmann::json& config, const char* name) {
  auto it = config.find(name);
  if (it == config.end() || !it->is_number_integer() || it->get<int64_t>() <= 0) return 0;
  return it->get<uint64_t>();
}

std::map<std::string, uint64_t> LlamaComponentParams(const nlohmann::json& config, int num_layers) {
  const uint64_t hidden = PositiveField(config, "hidden_size");
  const uint64_t intermediate = PositiveField(config, "intermediate_size");
  const uint64_t heads = PositiveField(config, "num_attention_heads");
  uint64_t kv_heads = PositiveField(config, "num_key_value_heads");
  if (kv_heads == 0) kv_heads = heads;  // HF's default: multi-head attention
  uint64_t head_dim = PositiveField(config, "head_dim");
  if (head_dim == 0 && heads != 0) head_dim = hidden / heads;
  if (hidden == 0 || intermediate == 0 || heads == 0 || head_dim == 0) return {};
  std::map<std::string, uint64_t> params;
  for (const ComponentId& c : AllComponents(num_layers)) {
    uint64_t n = 0;
    switch (c.kind) {
      case ComponentKind::kQ:
      case ComponentKind::kO:
        n = hidden * heads * head_dim;
        break;
      case ComponentKind::kK:
      case ComponentKind::kV:
        n = hidden * kv_heads * head_dim;
        break;
      case ComponentKind::kGate:
      case ComponentKind::kUp:
      case ComponentKind::kDown:
        n = hidden * intermediate;
        break;
    }
    params[c.Name()] = n;
  }
  return params;
}

}  // namespace

std::optional<ModelGeometry> ReadModelGeometry(const std::string& model_path, const ReadLimits& limits) {
  StatusOr<nlohmann::json> read = ReadJsonFile((std::filesystem::path(model_path) / "config.json").string(), limits);
  if (!read.ok() || !read->is_object()) return std::nullopt;
  const nlohmann::json& config = *read;
  auto layers = config.find("num_hidden_layers");
  if (layers == config.end() || !layers->is_number_integer() || layers->get<int64_t>() < 1 ||
      layers->get<int64_t>() > 1 << 20) {
    return std::nullopt;
  }
  ModelGeometry geometry;
  geometry.num_layers = layers->get<int>();
  geometry.component_params = LlamaComponentParams(config, geometry.num_layers);
  return geometry;
}

}  // namespace dtm
