// Job specs: the YAML a client submits (ParseJobSpec, called on every Submit), then ExpandConfigs on
// what parses, for the tiny model's 4 layers and Llama-2-7B's 32.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "coordinator/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  dtm::StatusOr<dtm::JobSpec> spec = dtm::ParseJobSpec(yaml);
  if (!spec.ok()) {
    // Every refusal is INVALID_ARGUMENT, which the coordinator maps to the client's error.
    if (spec.status().code() != dtm::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (spec->shard_size < 1 || spec->prefix_len < 1 || spec->completion_len < 1 || spec->num_probes < 0 ||
      spec->model.empty() || spec->probes.empty()) {
    std::abort();
  }
  for (int num_layers : {4, 32}) {
    dtm::StatusOr<std::vector<std::string>> configs = dtm::ExpandConfigs(*spec, num_layers);
    (void)configs;
  }
  return 0;
}
