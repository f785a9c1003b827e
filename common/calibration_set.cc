#include "common/calibration_set.h"

#include <utility>

#include "common/sha256.h"
#include "common/user_text.h"

namespace dtm {

StatusOr<CalibrationSequences> CutCalibrationSet(ProbeSet rows, int64_t count, int64_t seq_len,
                                                 const std::string& where) {
  if (count < 1) return InvalidArgumentError(where + ": count must be at least 1, got " + std::to_string(count));
  if (seq_len < 1) return InvalidArgumentError(where + ": seq_len must be at least 1, got " + std::to_string(seq_len));
  if (count > kMaxCalibrationTokens / seq_len) {
    return InvalidArgumentError(where + ": " + std::to_string(count) + " x " + std::to_string(seq_len) +
                                " tokens is more than a calibration set may hold (" +
                                std::to_string(kMaxCalibrationTokens) + ")");
  }
  if (static_cast<int64_t>(rows.probes.size()) < count) {
    return InvalidArgumentError(where + ": " + std::to_string(count) + " sequences wanted, the file has " +
                                std::to_string(rows.probes.size()));
  }
  CalibrationSequences set;
  set.seq_len = seq_len;
  for (int64_t i = 0; i < count; ++i) {
    Probe& row = rows.probes[static_cast<size_t>(i)];
    if (static_cast<int64_t>(row.tokens.size()) < seq_len) {
      return InvalidArgumentError(where + ": row " + std::to_string(i + 1) + " (" + Quoted(row.id) + ") has " +
                                  std::to_string(row.tokens.size()) + " tokens, fewer than seq_len " +
                                  std::to_string(seq_len) + " (cut longer rows, e.g. dtmctl make-probes --prefix " +
                                  std::to_string(seq_len) + ")");
    }
    row.tokens.resize(static_cast<size_t>(seq_len));
    set.sequences.push_back(std::move(row.tokens));
  }
  set.fingerprint = CalibrationFingerprint(seq_len, set.sequences);
  return set;
}

std::string CalibrationFingerprint(int64_t seq_len, const std::vector<std::vector<int32_t>>& sequences) {
  Sha256 hash;
  hash.Update("dtm-calibration-v1\nseq_len=" + std::to_string(seq_len) + "\ncount=" +
              std::to_string(sequences.size()) + "\n");
  for (const std::vector<int32_t>& sequence : sequences) {
    std::string line;
    for (int32_t t : sequence) line += std::to_string(t) + ",";
    line += "\n";
    hash.Update(line);
  }
  return hash.HexDigest();
}

}  // namespace dtm
