#include "common/input_checks.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "common/user_text.h"

namespace dtm {
namespace {


// "probe 3 (id 'a')": a row by its 1-based position in the set and its id.
std::string RowName(const char* kind, size_t index, const std::string& id) {
  return std::string(kind) + " " + std::to_string(index + 1) + " (id " + Quoted(id) + ")";
}

// Ids must be non-empty and unique; `first_row` maps each id seen to its row.
Status CheckId(const std::string& id, size_t index, const char* kind, const std::string& where,
               std::unordered_map<std::string, size_t>* first_row) {
  if (id.empty()) {
    return InvalidArgumentError(where + ": " + kind + " " + std::to_string(index + 1) +
                                " has an empty id; every " + kind + " needs a non-empty, unique id");
  }
  const auto [it, inserted] = first_row->emplace(id, index);
  if (!inserted) {
    return InvalidArgumentError(where + ": " + RowName(kind, index, id) + " repeats the id of " + kind + " " +
                                std::to_string(it->second + 1) + "; ids must be unique");
  }
  return OkStatus();
}

Status CheckTokenIds(const std::vector<int32_t>& tokens, int64_t vocab_size, const std::string& where) {
  for (size_t j = 0; j < tokens.size(); ++j) {
    const int64_t t = tokens[j];
    if (t < 0) {
      return InvalidArgumentError(where + ": token id " + std::to_string(t) + " at position " + std::to_string(j) +
                                  " is negative");
    }
    if (vocab_size > 0 && t >= vocab_size) {
      return InvalidArgumentError(where + ": token id " + std::to_string(t) + " at position " + std::to_string(j) +
                                  " is outside the model's vocabulary of " + std::to_string(vocab_size) +
                                  " ids (0.." + std::to_string(vocab_size - 1) + ")");
    }
  }
  return OkStatus();
}

}  // namespace

Status CheckProbeSet(const ProbeSet& set, const std::string& where, int64_t vocab_size) {
  if (set.probes.empty()) return InvalidArgumentError(where + ": holds no probes");
  std::unordered_map<std::string, size_t> first_row;
  for (size_t i = 0; i < set.probes.size(); ++i) {
    const Probe& p = set.probes[i];
    RETURN_IF_ERROR(CheckId(p.id, i, "probe", where, &first_row));
    if (p.tokens.empty()) return InvalidArgumentError(where + ": " + RowName("probe", i, p.id) + " has no tokens");
    RETURN_IF_ERROR(CheckTokenIds(p.tokens, vocab_size, where + ": " + RowName("probe", i, p.id)));
  }
  return OkStatus();
}

Status CheckBaseline(const Baseline& baseline, const std::string& where, int64_t vocab_size) {
  if (baseline.rows.empty()) return InvalidArgumentError(where + ": holds no baseline rows");
  std::unordered_map<std::string, size_t> first_row;
  const BaselineRow& first = baseline.rows.front();
  for (size_t i = 0; i < baseline.rows.size(); ++i) {
    const BaselineRow& r = baseline.rows[i];
    RETURN_IF_ERROR(CheckId(r.id, i, "row", where, &first_row));
    const std::string row = where + ": " + RowName("row", i, r.id);
    const size_t length = r.tokens.size();
    if (r.prefix_len < 1 || r.completion_len() < 1) {
      return InvalidArgumentError(row + ": needs 1 <= prefix_len < len(tokens), got prefix_len " +
                                  std::to_string(r.prefix_len) + " of " + std::to_string(length) + " tokens");
    }
    // Row 1 sets n and N; the message names both rows, since either may be the one that is wrong.
    if (r.prefix_len != first.prefix_len) {
      return InvalidArgumentError(row + " has prefix_len " + std::to_string(r.prefix_len) + " and row 1 has " +
                                  std::to_string(first.prefix_len) +
                                  ": a baseline is G(F, y[:n], N) for one prefix length n, the same in every row");
    }
    if (length != first.tokens.size()) {
      return InvalidArgumentError(row + " has " + std::to_string(length) + " tokens and row 1 has " +
                                  std::to_string(first.tokens.size()) +
                                  ": every row of a baseline holds prefix + completion = N tokens, one N for all rows");
    }
    RETURN_IF_ERROR(CheckTokenIds(r.tokens, vocab_size, row));
  }
  return OkStatus();
}

Status CheckEqualProbeLengths(const ProbeSet& set, const std::string& where) {
  for (size_t i = 1; i < set.probes.size(); ++i) {
    const Probe& p = set.probes[i];
    if (p.tokens.size() != set.probes.front().tokens.size()) {
      return InvalidArgumentError(where + ": " + RowName("probe", i, p.id) + " has " + std::to_string(p.tokens.size()) +
                                  " tokens and probe 1 has " + std::to_string(set.probes.front().tokens.size()) +
                                  ": the probes of one baseline share their prefix length n (cut them with "
                                  "`dtmctl make-probes --prefix N`)");
    }
  }
  return OkStatus();
}

}  // namespace dtm
