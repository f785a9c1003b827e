#include "common/input_checks.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace dtm {
namespace {

constexpr int64_t kVocab = 100;
constexpr const char* kWhere = "/data/set.jsonl";

ProbeSet Probes(std::vector<Probe> probes) { return ProbeSet{std::move(probes)}; }

// Three consistent rows: n = 2, N = 5.
Baseline GoodBaseline() {
  return Baseline{{{"a", 2, {1, 5, 6, 7, 8}}, {"b", 2, {1, 9, 6, 7, 8}}, {"c", 2, {1, 3, 4, 2, 99}}}};
}

// The message of a check that must fail with INVALID_ARGUMENT, on one line, naming `kWhere`.
std::string ErrorOf(const Status& status) {
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_EQ(status.message().rfind(kWhere, 0), 0u) << status.message();
  EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
  return status.message();
}

TEST(InputChecksTest, AcceptsAConsistentProbeSetOfUnequalLengths) {
  const ProbeSet set = Probes({{"x", {1, 2, 3}}, {"y", {1, 99}}, {"z", {0}}});
  EXPECT_TRUE(CheckProbeSet(set, kWhere, kVocab).ok());
  EXPECT_TRUE(CheckProbeSet(set, kWhere, 0).ok());
}

TEST(InputChecksTest, RefusesAnEmptyProbeSet) {
  EXPECT_NE(ErrorOf(CheckProbeSet(ProbeSet{}, kWhere, kVocab)).find("holds no probes"), std::string::npos);
}

TEST(InputChecksTest, RefusesDuplicateProbeIdsNamingBothProbes) {
  const std::string m = ErrorOf(CheckProbeSet(Probes({{"x", {1}}, {"y", {1}}, {"x", {2}}}), kWhere, kVocab));
  EXPECT_EQ(m, std::string(kWhere) + ": probe 3 (id 'x') repeats the id of probe 1; ids must be unique");
}

TEST(InputChecksTest, RefusesAnEmptyProbeId) {
  const std::string m = ErrorOf(CheckProbeSet(Probes({{"x", {1}}, {"", {1}}}), kWhere, kVocab));
  EXPECT_NE(m.find("probe 2 has an empty id"), std::string::npos) << m;
}

TEST(InputChecksTest, RefusesAProbeWithoutTokens) {
  const std::string m = ErrorOf(CheckProbeSet(Probes({{"x", {1}}, {"y", {}}}), kWhere, kVocab));
  EXPECT_EQ(m, std::string(kWhere) + ": probe 2 (id 'y') has no tokens");
}

TEST(InputChecksTest, RefusesTokenIdsOutsideTheVocabulary) {
  std::string m = ErrorOf(CheckProbeSet(Probes({{"x", {1, 2}}, {"y", {1, 100, 3}}}), kWhere, kVocab));
  EXPECT_EQ(m, std::string(kWhere) +
                   ": probe 2 (id 'y'): token id 100 at position 1 is outside the model's vocabulary of 100 ids (0..99)");
  m = ErrorOf(CheckProbeSet(Probes({{"x", {1, -4}}}), kWhere, kVocab));
  EXPECT_NE(m.find("probe 1 (id 'x'): token id -4 at position 1 is negative"), std::string::npos) << m;
}

TEST(InputChecksTest, UnknownVocabularyChecksOnlyTheSign) {
  EXPECT_TRUE(CheckProbeSet(Probes({{"x", {1, 1000000}}}), kWhere, 0).ok());
  ErrorOf(CheckProbeSet(Probes({{"x", {1, -1}}}), kWhere, 0));
  EXPECT_TRUE(CheckBaseline(Baseline{{{"a", 1, {1, 5000}}}}, kWhere, 0).ok());
}

TEST(InputChecksTest, AcceptsAConsistentBaseline) { EXPECT_TRUE(CheckBaseline(GoodBaseline(), kWhere, kVocab).ok()); }

TEST(InputChecksTest, RefusesABaselineRowCutShort) {
  Baseline b = GoodBaseline();
  b.rows[2].tokens.pop_back();
  const std::string m = ErrorOf(CheckBaseline(b, kWhere, kVocab));
  EXPECT_EQ(m, std::string(kWhere) +
                   ": row 3 (id 'c') has 4 tokens and row 1 has 5: every row of a baseline holds prefix + completion "
                   "= N tokens, one N for all rows");
}

TEST(InputChecksTest, RefusesABaselineRowWithAnotherPrefixLength) {
  Baseline b = GoodBaseline();
  b.rows[1].prefix_len = 3;  // same N, another n
  const std::string m = ErrorOf(CheckBaseline(b, kWhere, kVocab));
  EXPECT_EQ(m, std::string(kWhere) +
                   ": row 2 (id 'b') has prefix_len 3 and row 1 has 2: a baseline is G(F, y[:n], N) for one prefix "
                   "length n, the same in every row");
}

TEST(InputChecksTest, RefusesDuplicateAndEmptyBaselineIds) {
  Baseline b = GoodBaseline();
  b.rows[2].id = "a";
  EXPECT_EQ(ErrorOf(CheckBaseline(b, kWhere, kVocab)),
            std::string(kWhere) + ": row 3 (id 'a') repeats the id of row 1; ids must be unique");
  b.rows[2].id = "";
  EXPECT_NE(ErrorOf(CheckBaseline(b, kWhere, kVocab)).find("row 3 has an empty id"), std::string::npos);
}

TEST(InputChecksTest, RefusesABaselineTokenOutsideTheVocabulary) {
  Baseline b = GoodBaseline();
  b.rows[1].tokens[4] = 100;
  EXPECT_EQ(ErrorOf(CheckBaseline(b, kWhere, kVocab)),
            std::string(kWhere) +
                ": row 2 (id 'b'): token id 100 at position 4 is outside the model's vocabulary of 100 ids (0..99)");
}

TEST(InputChecksTest, RefusesARowWithoutACompletionOrPrefix) {
  EXPECT_NE(ErrorOf(CheckBaseline(Baseline{{{"a", 3, {1, 2, 3}}}}, kWhere, kVocab)).find("got prefix_len 3 of 3 tokens"),
            std::string::npos);
  EXPECT_NE(ErrorOf(CheckBaseline(Baseline{{{"a", 0, {1, 2, 3}}}}, kWhere, kVocab)).find("prefix_len 0"),
            std::string::npos);
  ErrorOf(CheckBaseline(Baseline{}, kWhere, kVocab));
}

TEST(InputChecksTest, EqualProbeLengthsNamesTheFirstProbeThatDiffers) {
  EXPECT_TRUE(CheckEqualProbeLengths(Probes({{"x", {1, 2}}, {"y", {3, 4}}}), kWhere).ok());
  EXPECT_TRUE(CheckEqualProbeLengths(ProbeSet{}, kWhere).ok());
  const std::string m = ErrorOf(CheckEqualProbeLengths(Probes({{"x", {1, 2}}, {"y", {3, 4}}, {"z", {5}}}), kWhere));
  EXPECT_NE(m.find("probe 3 (id 'z') has 1 tokens and probe 1 has 2"), std::string::npos) << m;
}

TEST(InputChecksTest, AnErrorNeverQuotesMoreThanABoundedId) {
  const std::string long_id(100000, 'q');
  const std::string m = ErrorOf(CheckProbeSet(Probes({{long_id, {1}}, {long_id, {1}}}), kWhere, kVocab));
  EXPECT_LT(m.size(), 300u) << m.size();
}

}  // namespace
}  // namespace dtm
