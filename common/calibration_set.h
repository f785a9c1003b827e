// GPTQ calibration sets (SPEC, gptq): the sequences whose inputs give the Hessians, cut the same way
// wherever they are made (a job's `calibration:` on the coordinator, `dtmctl eval --calibration`),
// and named by their content, so that the same set has the same fingerprint in every cache key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/probe_file.h"
#include "common/status.h"

namespace dtm {

// SPEC's default: 128 sequences of 2048 tokens from the calibration corpus.
inline constexpr int64_t kDefaultCalibrationCount = 128;
inline constexpr int64_t kDefaultCalibrationSeqLen = 2048;
// Bounds what one set may hold (128 x 2048 is 1/8 of it), so that it fits one gRPC message
// (at most 5 bytes a token on the wire).
inline constexpr int64_t kMaxCalibrationTokens = int64_t{2} << 20;

struct CalibrationSequences {
  int64_t seq_len = 0;
  std::vector<std::vector<int32_t>> sequences;  // each exactly seq_len tokens
  std::string fingerprint;                      // CalibrationFingerprint of the two above
};

// The first `count` rows of `rows` (a probe or baseline file), each cut to its first `seq_len`
// tokens. INVALID_ARGUMENT, starting with `where`, when count or seq_len is below 1, when
// count x seq_len passes kMaxCalibrationTokens, when the file has fewer than `count` rows, or when
// a row is shorter than seq_len (naming it: a shorter row would make a set of another shape).
StatusOr<CalibrationSequences> CutCalibrationSet(ProbeSet rows, int64_t count, int64_t seq_len,
                                                 const std::string& where);

// Hex SHA-256 over a versioned text of seq_len, the sequence count and every token, in order.
std::string CalibrationFingerprint(int64_t seq_len, const std::vector<std::vector<int32_t>>& sequences);

}  // namespace dtm
