#include "common/user_text.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <string_view>

namespace dtm {
namespace {

constexpr size_t npos = std::string_view::npos;

// "日" is 3 bytes, "é" 2, "😀" 4: text whose characters are wider than one byte.
const std::string kE = "\xc3\xa9";                     // U+00E9
const std::string kSun = "\xe6\x97\xa5";               // U+65E5
const std::string kSmile = "\xf0\x9f\x98\x80";         // U+1F600
const std::string kMaxCodePoint = "\xf4\x8f\xbf\xbf";  // U+10FFFF

// Whether `text` holds a C0 control character or DEL.
bool HasAsciiControl(std::string_view text) {
  for (char c : text) {
    const auto b = static_cast<uint8_t>(c);
    if (b < 0x20 || b == 0x7F) return true;
  }
  return false;
}

class UserTextTest : public ::testing::Test {};

// ---------------------------------------------------------------------------------------------
// InvalidUtf8Offset

TEST_F(UserTextTest, ValidTextHasNoInvalidOffset) {
  EXPECT_EQ(InvalidUtf8Offset(""), npos);
  EXPECT_EQ(InvalidUtf8Offset("plain ascii, with punctuation ~!"), npos);
  EXPECT_EQ(InvalidUtf8Offset(std::string("nul \0 inside", 12)), npos);
  EXPECT_EQ(InvalidUtf8Offset("gr" + kE + "s " + kSun + " " + kSmile), npos);
  // The edges of each range: U+007F, U+0080, U+07FF, U+0800, U+D7FF, U+E000, U+FFFF, U+10000, U+10FFFF.
  EXPECT_EQ(InvalidUtf8Offset("\x7f"), npos);
  EXPECT_EQ(InvalidUtf8Offset("\xc2\x80"), npos);
  EXPECT_EQ(InvalidUtf8Offset("\xdf\xbf"), npos);
  EXPECT_EQ(InvalidUtf8Offset("\xe0\xa0\x80"), npos);
  EXPECT_EQ(InvalidUtf8Offset("\xed\x9f\xbf"), npos);
  EXPECT_EQ(InvalidUtf8Offset("\xee\x80\x80"), npos);
  EXPECT_EQ(InvalidUtf8Offset("\xef\xbf\xbf"), npos);
  EXPECT_EQ(InvalidUtf8Offset("\xf0\x90\x80\x80"), npos);
  EXPECT_EQ(InvalidUtf8Offset(kMaxCodePoint), npos);
}

TEST_F(UserTextTest, ReturnsTheOffsetOfTheFirstInvalidByte) {
  EXPECT_EQ(InvalidUtf8Offset("\xff"), 0u);
  EXPECT_EQ(InvalidUtf8Offset(std::string("abc\xff") + "def"), 3u);
  // After multi-byte characters, the offset counts bytes, not characters.
  EXPECT_EQ(InvalidUtf8Offset(kSun + "\xfe"), 3u);
  EXPECT_EQ(InvalidUtf8Offset(kE + kSmile + "x\x80"), 7u);
  // A continuation byte with nothing to continue.
  EXPECT_EQ(InvalidUtf8Offset(std::string("a\x80") + "b"), 1u);
  EXPECT_EQ(InvalidUtf8Offset("\xbf"), 0u);
}

TEST_F(UserTextTest, RefusesOverlongForms) {
  EXPECT_EQ(InvalidUtf8Offset("ab\xc0\x80"), 2u);        // U+0000 in two bytes
  EXPECT_EQ(InvalidUtf8Offset("\xc1\xbf"), 0u);          // U+007F in two bytes
  EXPECT_EQ(InvalidUtf8Offset("x\xe0\x80\xaf"), 1u);     // '/' in three bytes
  EXPECT_EQ(InvalidUtf8Offset("\xe0\x9f\xbf"), 0u);      // U+07FF in three bytes
  EXPECT_EQ(InvalidUtf8Offset("\xf0\x8f\xbf\xbf"), 0u);  // U+FFFF in four bytes
  EXPECT_EQ(InvalidUtf8Offset("\xf0\x80\x80\x80"), 0u);
}

TEST_F(UserTextTest, RefusesSurrogates) {
  EXPECT_EQ(InvalidUtf8Offset("x\xed\xa0\x80"), 1u);  // U+D800
  EXPECT_EQ(InvalidUtf8Offset("\xed\xbf\xbf"), 0u);   // U+DFFF
  // A CESU-8 pair (U+D83D U+DE00 for U+1F600) is two surrogates, not a character.
  EXPECT_EQ(InvalidUtf8Offset("\xed\xa0\xbd\xed\xb8\x80"), 0u);
}

TEST_F(UserTextTest, RefusesCodePointsPastU10FFFF) {
  EXPECT_EQ(InvalidUtf8Offset("\xf4\x90\x80\x80"), 0u);  // U+110000
  EXPECT_EQ(InvalidUtf8Offset("ok\xf5\x80\x80\x80"), 2u);
  EXPECT_EQ(InvalidUtf8Offset("\xf7\xbf\xbf\xbf"), 0u);
  EXPECT_EQ(InvalidUtf8Offset("\xf8\x88\x80\x80\x80"), 0u);  // five-byte form
  EXPECT_EQ(InvalidUtf8Offset("\xfe"), 0u);
}

TEST_F(UserTextTest, RefusesTruncatedAndBrokenSequences) {
  EXPECT_EQ(InvalidUtf8Offset("abc\xc3"), 3u);
  EXPECT_EQ(InvalidUtf8Offset("abc\xe6\x97"), 3u);
  EXPECT_EQ(InvalidUtf8Offset(kE + "\xf0\x9f\x98"), 2u);
  // A lead byte followed by something other than a continuation byte.
  EXPECT_EQ(InvalidUtf8Offset("\xc3(x"), 0u);
  EXPECT_EQ(InvalidUtf8Offset("\xe6\x97(x"), 0u);
  EXPECT_EQ(InvalidUtf8Offset("z\xf0\x9f\x98(x"), 1u);
}

// ---------------------------------------------------------------------------------------------
// Bounded

TEST_F(UserTextTest, BoundedKeepsShortPrintableTextAsItIs) {
  EXPECT_EQ(Bounded(""), "");
  EXPECT_EQ(Bounded("probes.jsonl"), "probes.jsonl");
  const std::string unicode = "gr" + kE +
                              "\xc3\x9f"
                              "e " +
                              kSun + " " + kSmile + " " + kMaxCodePoint;
  EXPECT_EQ(Bounded(unicode), unicode);
}

TEST_F(UserTextTest, BoundedKeepsTextOfExactlyTheLimit) {
  EXPECT_EQ(Bounded("abcde", 5), "abcde");
  EXPECT_EQ(Bounded(std::string(kQuotedTextBytes, 'x')), std::string(kQuotedTextBytes, 'x'));
}

TEST_F(UserTextTest, BoundedCutsLongTextAndNamesItsLengthWithinTheLimit) {
  // The limit holds the suffix too: "... (20 bytes)" is 14 bytes, so a limit of 17 keeps 3.
  EXPECT_EQ(Bounded("abcdefghijklmnopqrst", 17), "abc... (20 bytes)");
  const std::string suffix = "... (" + std::to_string(kQuotedTextBytes + 1) + " bytes)";
  const std::string cut = Bounded(std::string(kQuotedTextBytes + 1, 'y'));
  EXPECT_EQ(cut, std::string(kQuotedTextBytes - suffix.size(), 'y') + suffix);
  EXPECT_EQ(cut.size(), kQuotedTextBytes);
  const std::string big(100000, 'z');
  EXPECT_EQ(Bounded(big, 30), std::string(12, 'z') + "... (100000 bytes)");
  // A limit too small for the suffix keeps no text, and says how much there was.
  EXPECT_EQ(Bounded("abcdef", 3), "... (6 bytes)");
  EXPECT_EQ(Bounded("abc", 0), "... (3 bytes)");
}

TEST_F(UserTextTest, BoundedCutsAtACharacterBoundary) {
  // "a" + 3-byte characters, with room for 4 to 6 bytes of text beside the 14-byte suffix: a limit
  // inside the second character keeps only the first.
  std::string text = "a";
  for (int i = 0; i < 10; ++i) text += kSun;  // 31 bytes
  const size_t suffix = std::string("... (31 bytes)").size();
  EXPECT_EQ(Bounded(text, suffix + 4), "a" + kSun + "... (31 bytes)");
  EXPECT_EQ(Bounded(text, suffix + 5), "a" + kSun + "... (31 bytes)");
  EXPECT_EQ(Bounded(text, suffix + 6), "a" + kSun + "... (31 bytes)");
  EXPECT_EQ(Bounded(text, suffix + 7), "a" + kSun + kSun + "... (31 bytes)");
  // Four-byte characters, cut at each byte of the second one.
  std::string smiles;
  for (int i = 0; i < 10; ++i) smiles += kSmile;  // 40 bytes
  const size_t smile_suffix = std::string("... (40 bytes)").size();
  for (size_t limit = 4; limit < 8; ++limit) {
    SCOPED_TRACE("limit " + std::to_string(limit));
    const std::string out = Bounded(smiles, smile_suffix + limit);
    EXPECT_EQ(out, kSmile + "... (40 bytes)");
    EXPECT_EQ(InvalidUtf8Offset(out), npos);
  }
  EXPECT_EQ(Bounded(kE + "x", 1), "... (3 bytes)");
}


TEST_F(UserTextTest, BoundedReplacesControlCharactersWithQuestionMarks) {
  EXPECT_EQ(Bounded("line1\nline2\r\n"), "line1?line2??");
  EXPECT_EQ(Bounded("tab\there"), "tab?here");
  EXPECT_EQ(Bounded("\x1b[31mred\x1b[0m"), "?[31mred?[0m");
  EXPECT_EQ(Bounded(std::string("nul\0del\x7f", 8)), "nul?del?");
  // Replacement keeps the length, so the cut falls where it would have: 4 bytes beside "... (20 bytes)".
  EXPECT_EQ(Bounded("a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n", 18), "a?b?... (20 bytes)");
}

// The header promises that control characters become '?', newlines included. U+0080..U+009F are
// Unicode control characters too (category Cc): U+0085 is NEXT LINE, and U+009B is the one-byte CSI
// that some terminals act on. Today they are kept as they are.
TEST_F(UserTextTest, BoundedReplacesC1ControlCharactersWithQuestionMarks) {
  EXPECT_EQ(Bounded("a" + std::string("\xc2\x85") + "b"), "a?b");     // U+0085 NEXT LINE
  EXPECT_EQ(Bounded(std::string("\xc2\x9b") + "31mred"), "?31mred");  // U+009B CSI
}

TEST_F(UserTextTest, BoundedReplacesInvalidUtf8WithQuestionMarks) {
  EXPECT_EQ(Bounded(std::string("a\xff") + "b"), "a?b");
  EXPECT_EQ(Bounded("\x80"), "?");
  // Overlong, surrogate, past U+10FFFF, truncated: every byte of them is replaced, nothing of them kept.
  for (const std::string& bad : {std::string("\xc0\xaf"), std::string("\xed\xa0\x80"),
                                 std::string("\xf4\x90\x80\x80"), std::string("\xe6\x97")}) {
    const std::string out = Bounded("<" + bad + ">");
    SCOPED_TRACE(out);
    ASSERT_GE(out.size(), 3u);
    EXPECT_EQ(out.front(), '<');
    EXPECT_EQ(out.back(), '>');
    EXPECT_EQ(out.substr(1, out.size() - 2).find_first_not_of('?'), std::string::npos);
  }
  // Valid characters around an invalid byte are kept whole.
  EXPECT_EQ(Bounded(kSun + "\xff" + kE), kSun + "?" + kE);
}

TEST_F(UserTextTest, BoundedOutputIsAlwaysValidPrintableAndBounded) {
  std::mt19937 rng(20231);
  for (int trial = 0; trial < 2000; ++trial) {
    std::string text(rng() % 64, '\0');
    for (char& c : text) c = static_cast<char>(rng() % 256);
    const size_t limit = rng() % 40;
    const std::string out = Bounded(text, limit);
    SCOPED_TRACE("trial " + std::to_string(trial));
    ASSERT_EQ(InvalidUtf8Offset(out), npos);
    ASSERT_FALSE(HasAsciiControl(out));
    if (text.size() <= limit) {
      ASSERT_LE(out.size(), limit);
    } else {
      const std::string suffix = "... (" + std::to_string(text.size()) + " bytes)";
      ASSERT_GE(out.size(), suffix.size());
      ASSERT_EQ(out.substr(out.size() - suffix.size()), suffix);
      ASSERT_LE(out.size() - suffix.size(), limit);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Quoted

TEST_F(UserTextTest, QuotedPutsBoundedTextInSingleQuotes) {
  EXPECT_EQ(Quoted("probes.jsonl"), "'probes.jsonl'");
  EXPECT_EQ(Quoted(""), "''");
  EXPECT_EQ(Quoted("a\nb\xff"), "'a?b?'");
  EXPECT_EQ(Quoted("abcdefghijklmnopq", 16), "'ab... (17 bytes)'");
  const std::string long_path(10000, 'p');
  const std::string quoted = Quoted(long_path);
  EXPECT_EQ(quoted, "'" + Bounded(long_path) + "'");
  EXPECT_LT(quoted.size(), kQuotedTextBytes + 32);
  EXPECT_NE(quoted.find("(10000 bytes)"), std::string::npos);
}

}  // namespace
}  // namespace dtm
