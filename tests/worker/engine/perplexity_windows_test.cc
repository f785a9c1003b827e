#include "worker/engine/perplexity_windows.h"

#include <gtest/gtest.h>

#include "tests/worker/engine/test_models.h"
#include "worker/engine/bpe_trainer.h"
#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

// Expected values are what Python 3.11 prints for
//   "\n\n".join(r if r.strip() else "" for r in io.TextIOWrapper(io.BytesIO(text.encode()), encoding="utf-8"))
// (HF's wikitext loader and GPTQ's datautils), computed once and pasted here.
TEST(JoinLinesAsRowsTest, MatchesPythonsRowsJoinedByBlankLines) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", ""},
      {"a", "a"},
      {"a\n", "a\n"},
      {"\n", ""},
      // The head of wiki.test.raw: whitespace-only lines become empty rows.
      {" \n = Head = \n \n Body text .\n", "\n\n = Head = \n\n\n\n\n Body text .\n"},
      {"a\r\nb\rc\n", "a\n\n\nb\n\n\nc\n"},
      {"x\n\xC2\xA0\xE3\x80\x80\t\n y", "x\n\n\n\n\n y"},   // U+00A0, U+3000: whitespace to Python
      {"\xE2\x80\x8B\n", "\xE2\x80\x8B\n"},                 // U+200B (zero width space) is not
      {"end\n\n", "end\n\n\n"},
  };
  for (const auto& [file, joined] : cases) {
    EXPECT_EQ(JoinLinesAsRows(file), joined) << "file text: " << ::testing::PrintToString(file);
  }
}

TEST(JoinLinesAsRowsTest, BytesThatAreNotUtf8AreText) {
  // An overlong encoding of a space (C0 A0) and a lone continuation byte are not whitespace.
  EXPECT_EQ(JoinLinesAsRows("\xC0\xA0\n\x80\n"), "\xC0\xA0\n\n\n\x80\n");
}

std::vector<int32_t> Iota(int32_t n) {
  std::vector<int32_t> v(n);
  for (int32_t i = 0; i < n; ++i) v[i] = 100 + i;
  return v;
}

TEST(CutPerplexityWindowsTest, ConsecutiveWindowsAndTheLastPartialOneDropped) {
  StatusOr<ProbeSet> set = CutPerplexityWindows(Iota(11), 4, "t.txt");
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  ASSERT_EQ(set->probes.size(), 2u);
  EXPECT_EQ(set->probes[0].id, "t.txt:0");
  EXPECT_EQ(set->probes[0].tokens, (std::vector<int32_t>{100, 101, 102, 103}));
  EXPECT_EQ(set->probes[1].id, "t.txt:4");
  EXPECT_EQ(set->probes[1].tokens, (std::vector<int32_t>{104, 105, 106, 107}));
}

TEST(CutPerplexityWindowsTest, AnExactMultipleKeepsEveryToken) {
  StatusOr<ProbeSet> set = CutPerplexityWindows(Iota(6), 2, "t");
  ASSERT_TRUE(set.ok());
  ASSERT_EQ(set->probes.size(), 3u);
  EXPECT_EQ(set->probes[2].tokens, (std::vector<int32_t>{104, 105}));
}

TEST(CutPerplexityWindowsTest, RefusesAWindowThatScoresNothingAndATextShorterThanOneWindow) {
  StatusOr<ProbeSet> one = CutPerplexityWindows(Iota(10), 1, "t.txt");
  ASSERT_FALSE(one.ok());
  EXPECT_EQ(one.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(one.status().message().find("at least 2"), std::string::npos) << one.status().message();

  StatusOr<ProbeSet> short_text = CutPerplexityWindows(Iota(7), 8, "short.txt");
  ASSERT_FALSE(short_text.ok());
  EXPECT_EQ(short_text.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(short_text.status().message(), "short.txt: 7 tokens (BOS included), fewer than one window of 8 tokens");
}

class PerplexityWindowsFromTextTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tokenizer = testing::TinyTestTokenizer(dir_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    tokenizer_ = std::move(*tokenizer);
  }

  testing::TempDir dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(PerplexityWindowsFromTextTest, OneBosAtTheStartAndTheWindowsAreTheTextsTokensInOrder) {
  const std::string text = JoinLinesAsRows("the cat sat on the mat\n \nthe lazy dog\nagain and again\nthe fox\n");
  const std::vector<int32_t> all = tokenizer_->Encode(text, true);
  const int64_t w = 5;
  ASSERT_GE(static_cast<int64_t>(all.size()), 3 * w) << "the text should give several windows";
  StatusOr<PerplexityWindows> got = PerplexityWindowsFromText(text, *tokenizer_, w, "x.txt");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->text_tokens, static_cast<int64_t>(all.size()));
  EXPECT_EQ(got->dropped_tokens, got->text_tokens % w);
  ASSERT_EQ(static_cast<int64_t>(got->windows.probes.size()), got->text_tokens / w);
  std::vector<int32_t> joined;
  for (const Probe& p : got->windows.probes) {
    EXPECT_EQ(static_cast<int64_t>(p.tokens.size()), w);
    joined.insert(joined.end(), p.tokens.begin(), p.tokens.end());
  }
  EXPECT_EQ(joined, std::vector<int32_t>(all.begin(), all.begin() + static_cast<int64_t>(joined.size())));
  int bos = 0;
  for (int32_t id : joined) bos += id == tokenizer_->bos_id();
  EXPECT_EQ(bos, 1);
  EXPECT_EQ(joined[0], tokenizer_->bos_id());
}

TEST_F(PerplexityWindowsFromTextTest, ATextShorterThanOneWindowNamesItsTokenCount) {
  const int64_t n = static_cast<int64_t>(tokenizer_->Encode("the cat", true).size());
  StatusOr<PerplexityWindows> got = PerplexityWindowsFromText("the cat", *tokenizer_, 64, "cat.txt");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().message(),
            "cat.txt: " + std::to_string(n) + " tokens (BOS included), fewer than one window of 64 tokens");
}

}  // namespace
}  // namespace dtm
