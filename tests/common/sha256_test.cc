#include "common/sha256.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

namespace dtm {
namespace {

// Test vectors from FIPS 180-4's examples (NIST CSRC "SHA256.pdf", "SHA2_Additional.pdf").
TEST(Sha256Test, MatchesTheEmptyStringVector) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

TEST(Sha256Test, MatchesTheAbcVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Sha256Test, MatchesThe448BitVector) {
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, MatchesThe896BitVector) {
  EXPECT_EQ(Sha256Hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                      "mnopqrstnopqrstu"),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(Sha256Test, MatchesTheOneMillionAVector) {
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256Test, GivesTheSameDigestWhateverTheUpdateSplits) {
  std::mt19937 rng(7);
  std::string data(10000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  const std::string expected = Sha256Hex(data);
  for (int trial = 0; trial < 50; ++trial) {
    Sha256 hasher;
    size_t pos = 0;
    while (pos < data.size()) {
      size_t n = std::min<size_t>(rng() % 200, data.size() - pos);
      hasher.Update(data.data() + pos, n);
      pos += n;
    }
    EXPECT_EQ(hasher.HexDigest(), expected);
  }
}

TEST(Sha256Test, HandlesLengthsAroundThePaddingBoundary) {
  // 55, 56 and 64 bytes put the length field in the same block, the next one, and after a full block.
  EXPECT_EQ(Sha256Hex(std::string(55, 'a')), "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
  EXPECT_EQ(Sha256Hex(std::string(56, 'a')), "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a");
  EXPECT_EQ(Sha256Hex(std::string(64, 'a')), "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb");
}

TEST(Sha256Test, ReturnsTheSameDigestWhenAskedTwice) {
  Sha256 hasher;
  hasher.Update("abc");
  std::string first = hasher.HexDigest();
  EXPECT_EQ(hasher.HexDigest(), first);
}

}  // namespace
}  // namespace dtm
