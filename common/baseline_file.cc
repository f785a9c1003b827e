#include "common/baseline_file.h"

#include <cstdint>

#include <nlohmann/json.hpp>

#include "common/jsonl.h"
#include "common/sha256.h"

namespace dtm {

std::string Baseline::Fingerprint() const {
  Sha256 hash;
  for (const BaselineRow& r : rows) {
    hash.Update(r.id);
    hash.Update(std::string_view("\0", 1));
    hash.Update(std::to_string(r.prefix_len) + ":");
    for (int32_t t : r.tokens) hash.Update(std::to_string(t) + ",");
    hash.Update(std::string_view("\n", 1));
  }
  return hash.HexDigest();
}

StatusOr<Baseline> ReadBaselineFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<nlohmann::json> rows, ReadJsonLines(path));
  Baseline baseline;
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& row = rows[i];
    const std::string where = path + ": row " + std::to_string(i + 1);
    if (!row.is_object() || !row.contains("id") || !row.contains("prefix_len") || !row.contains("tokens")) {
      return InvalidArgumentError(where + ": expected an object with \"id\", \"prefix_len\" and \"tokens\"");
    }
    if (!row["id"].is_string()) return InvalidArgumentError(where + ": \"id\" must be a string");
    if (!row["prefix_len"].is_number_integer()) return InvalidArgumentError(where + ": \"prefix_len\" must be an integer");
    if (!row["tokens"].is_array()) return InvalidArgumentError(where + ": \"tokens\" must be an array");
    std::string model;
    if (row.contains("model_fingerprint")) {
      if (!row["model_fingerprint"].is_string() || row["model_fingerprint"].get<std::string>().empty()) {
        return InvalidArgumentError(where + ": \"model_fingerprint\" must be a non-empty string");
      }
      model = row["model_fingerprint"].get<std::string>();
    }
    if (i == 0) {
      baseline.model_fingerprint = model;
    } else if (model != baseline.model_fingerprint) {
      return InvalidArgumentError(where + ": \"model_fingerprint\" " + (model.empty() ? "missing" : "'" + model + "'") +
                                  " differs from row 1's " +
                                  (baseline.model_fingerprint.empty() ? "(none)" : "'" + baseline.model_fingerprint + "'") +
                                  ": rows of baselines of different models");
    }
    BaselineRow out{row["id"].get<std::string>(), row["prefix_len"].get<int64_t>(), {}};
    for (const nlohmann::json& t : row["tokens"]) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
        return InvalidArgumentError(where + ": token ids must be non-negative integers");
      }
      out.tokens.push_back(t.get<int32_t>());
    }
    if (out.prefix_len < 1 || out.completion_len() < 1) {
      return InvalidArgumentError(where + ": needs 1 <= prefix_len < len(tokens), got prefix_len " +
                                  std::to_string(out.prefix_len) + " of " + std::to_string(out.tokens.size()) + " tokens");
    }
    baseline.rows.push_back(std::move(out));
  }
  if (baseline.rows.empty()) return InvalidArgumentError(path + ": holds no baseline rows");
  return baseline;
}

Status WriteBaselineFile(const std::string& path, const Baseline& baseline) {
  std::vector<nlohmann::json> rows;
  rows.reserve(baseline.rows.size());
  for (const BaselineRow& r : baseline.rows) {
    nlohmann::json row = {{"id", r.id}, {"prefix_len", r.prefix_len}, {"tokens", r.tokens}};
    if (!baseline.model_fingerprint.empty()) row["model_fingerprint"] = baseline.model_fingerprint;
    rows.push_back(std::move(row));
  }
  return WriteJsonLines(path, rows);
}

}  // namespace dtm
