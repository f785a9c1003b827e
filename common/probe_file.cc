#include "common/probe_file.h"

#include <cstdint>

#include <nlohmann/json.hpp>

#include "common/jsonl.h"
#include "common/sha256.h"

namespace dtm {

std::string ProbeSet::Fingerprint() const {
  Sha256 hash;
  for (const Probe& p : probes) {
    hash.Update(p.id);
    hash.Update(std::string_view("\0", 1));
    for (int32_t t : p.tokens) hash.Update(std::to_string(t) + ",");
    hash.Update(std::string_view("\n", 1));
  }
  return hash.HexDigest();
}

StatusOr<ProbeSet> ReadProbeFile(const std::string& path, const ReadLimits& limits) {
  ASSIGN_OR_RETURN(std::vector<nlohmann::json> rows, ReadJsonLines(path, limits));
  ProbeSet set;
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& row = rows[i];
    const std::string where = path + ": probe " + std::to_string(i + 1);
    if (!row.is_object() || !row.contains("id") || !row.contains("tokens")) {
      return InvalidArgumentError(where + ": expected an object with \"id\" and \"tokens\"");
    }
    if (!row["id"].is_string()) return InvalidArgumentError(where + ": \"id\" must be a string");
    const nlohmann::json& tokens = row["tokens"];
    if (!tokens.is_array() || tokens.empty()) return InvalidArgumentError(where + ": \"tokens\" must be a non-empty array");
    Probe probe{row["id"].get<std::string>(), {}};
    for (const nlohmann::json& t : tokens) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
        return InvalidArgumentError(where + ": token ids must be non-negative integers");
      }
      probe.tokens.push_back(t.get<int32_t>());
    }
    set.probes.push_back(std::move(probe));
  }
  if (set.probes.empty()) return InvalidArgumentError(path + ": holds no probes");
  return set;
}

Status WriteProbeFile(const std::string& path, const ProbeSet& probes) {
  std::vector<nlohmann::json> rows;
  rows.reserve(probes.probes.size());
  for (const Probe& p : probes.probes) rows.push_back({{"id", p.id}, {"tokens", p.tokens}});
  return WriteJsonLines(path, rows);
}

}  // namespace dtm
