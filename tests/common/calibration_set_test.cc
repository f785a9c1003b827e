// common/calibration_set: how a calibration set is cut from a file's rows and named by its content.
#include "common/calibration_set.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/sha256.h"

namespace dtm {
namespace {

using ::testing::HasSubstr;

ProbeSet Rows() { return ProbeSet{{{"a", {1, 2, 3, 4}}, {"b", {5, 6, 7}}, {"c", {8, 9, 10, 11, 12}}}}; }

TEST(CalibrationSetTest, CutsTheFirstRowsToSeqLen) {
  StatusOr<CalibrationSequences> set = CutCalibrationSet(Rows(), 2, 3, "calibration: f");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->seq_len, 3);
  EXPECT_EQ(set->sequences, (std::vector<std::vector<int32_t>>{{1, 2, 3}, {5, 6, 7}}));
  EXPECT_EQ(set->fingerprint, CalibrationFingerprint(3, set->sequences));
}

TEST(CalibrationSetTest, RefusesWhatWouldMakeASetOfAnotherShape) {
  auto expect = [](int64_t count, int64_t seq_len, const std::string& needle) {
    StatusOr<CalibrationSequences> set = CutCalibrationSet(Rows(), count, seq_len, "calibration: f");
    ASSERT_FALSE(set.ok()) << count << " x " << seq_len;
    EXPECT_EQ(set.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(set.status().message(), HasSubstr("calibration: f: "));
    EXPECT_THAT(set.status().message(), HasSubstr(needle));
  };
  expect(3, 4, "row 2 ('b') has 3 tokens, fewer than seq_len 4");
  expect(4, 1, "4 sequences wanted, the file has 3");
  expect(0, 1, "count must be at least 1");
  expect(1, 0, "seq_len must be at least 1");
  expect(kMaxCalibrationTokens, 2, "more than a calibration set may hold");
}

TEST(CalibrationSetTest, TheFingerprintIsTheHashOfTheDocumentedTextAndMovesWithEveryPart) {
  const std::vector<std::vector<int32_t>> s = {{1, 2}, {30, 4}};
  Sha256 hash;
  hash.Update("dtm-calibration-v1\nseq_len=2\ncount=2\n1,2,\n30,4,\n");
  EXPECT_EQ(CalibrationFingerprint(2, s), hash.HexDigest());
  EXPECT_NE(CalibrationFingerprint(2, s), CalibrationFingerprint(2, {{1, 2}, {3, 4}}));
  EXPECT_NE(CalibrationFingerprint(2, s), CalibrationFingerprint(2, {{30, 4}, {1, 2}}));
  EXPECT_NE(CalibrationFingerprint(2, {{1, 23}, {4, 5}}), CalibrationFingerprint(2, {{1, 2}, {34, 5}}));
}

}  // namespace
}  // namespace dtm
