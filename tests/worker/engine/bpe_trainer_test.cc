#include "worker/engine/bpe_trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

const std::string kSp = "\xE2\x96\x81";  // "▁"

// A deterministic pseudo-English corpus: Zipf-like word choice from a fixed list, some accents and
// digits, and a few rare characters that should be left to byte fallback.
std::vector<std::string> Corpus(int sentences) {
  static const std::vector<std::string> kWords = {"the",
                                                  "of",
                                                  "and",
                                                  "to",
                                                  "in",
                                                  "a",
                                                  "is",
                                                  "that",
                                                  "for",
                                                  "it",
                                                  "as",
                                                  "was",
                                                  "with",
                                                  "be",
                                                  "by",
                                                  "on",
                                                  "not",
                                                  "he",
                                                  "this",
                                                  "are",
                                                  "or",
                                                  "his",
                                                  "from",
                                                  "at",
                                                  "which",
                                                  "but",
                                                  "have",
                                                  "an",
                                                  "had",
                                                  "they",
                                                  "you",
                                                  "were",
                                                  "their",
                                                  "one",
                                                  "all",
                                                  "we",
                                                  "can",
                                                  "her",
                                                  "has",
                                                  "there",
                                                  "been",
                                                  "if",
                                                  "more",
                                                  "when",
                                                  "will",
                                                  "would",
                                                  "who",
                                                  "so",
                                                  "no",
                                                  "café",
                                                  "naïve",
                                                  "résumé",
                                                  "jury",
                                                  "election",
                                                  "investigation",
                                                  "government",
                                                  "president",
                                                  "administration",
                                                  "development",
                                                  "understanding",
                                                  "relationship"};
  uint64_t state = 12345;
  auto next = [&state] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(state >> 33);
  };
  std::vector<std::string> texts;
  for (int s = 0; s < sentences; ++s) {
    std::string text;
    const int length = 5 + next() % 15;
    for (int w = 0; w < length; ++w) {
      // Squaring a uniform draw favours the first words.
      const double u = (next() % 10000) / 10000.0;
      std::string word = kWords[static_cast<size_t>(u * u * kWords.size())];
      if (next() % 50 == 0) word = std::to_string(next() % 2000);
      if (next() % 40 == 0) word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
      text += (w ? " " : "") + word;
    }
    if (s % 997 == 0) text += " ☃";  // rare: left to byte fallback
    texts.push_back(text + (s % 3 ? "." : ","));
  }
  return texts;
}

BpeModel TrainSmall(int vocab_size = 500, int max_piece_chars = 16) {
  BpeTrainerOptions options;
  options.vocab_size = vocab_size;
  options.max_piece_chars = max_piece_chars;
  return BpeModel::Train(Corpus(3000), options);
}

int CharCount(const std::string& s) {
  int n = 0;
  for (char c : s) n += (static_cast<uint8_t>(c) & 0xC0) != 0x80;
  return n;
}

TEST(BpeTrainerTest, GivesTheSameBytesForTheSameInput) {
  const BpeModel a = TrainSmall();
  const BpeModel b = TrainSmall();
  EXPECT_EQ(SerializeSentencePieceModel(a.ToSentencePieceModel()),
            SerializeSentencePieceModel(b.ToSentencePieceModel()));
  EXPECT_EQ(a.ToHfTokenizerJson(), b.ToHfTokenizerJson());
}

TEST(BpeTrainerTest, LaysOutSpecialByteCharacterThenMergedPieces) {
  const BpeModel model = TrainSmall();
  ASSERT_EQ(model.vocab_size(), 500);
  const auto& pieces = model.pieces();
  EXPECT_EQ(pieces[0].piece, "<unk>");
  EXPECT_EQ(pieces[0].type, PieceType::kUnknown);
  EXPECT_EQ(pieces[1].piece, "<s>");
  EXPECT_EQ(pieces[1].type, PieceType::kControl);
  EXPECT_EQ(pieces[2].piece, "</s>");
  EXPECT_EQ(pieces[2].type, PieceType::kControl);
  EXPECT_EQ(pieces[3].piece, "<0x00>");
  EXPECT_EQ(pieces[3 + 0x0A].piece, "<0x0A>");
  EXPECT_EQ(pieces[258].piece, "<0xFF>");
  for (int i = 3; i < BpeModel::kFirstNormalId; ++i) EXPECT_EQ(pieces[i].type, PieceType::kByte);
  // The most frequent character is the space symbol; single characters precede merged pieces.
  EXPECT_EQ(pieces[BpeModel::kFirstNormalId].piece, kSp);
  bool seen_merged = false;
  for (int i = BpeModel::kFirstNormalId; i < model.vocab_size(); ++i) {
    EXPECT_EQ(pieces[i].type, PieceType::kNormal);
    EXPECT_EQ(pieces[i].score, -static_cast<float>(i - BpeModel::kFirstNormalId)) << i;
    const bool merged = CharCount(pieces[i].piece) > 1;
    EXPECT_FALSE(seen_merged && !merged) << "single character after merged pieces: " << pieces[i].piece;
    seen_merged = seen_merged || merged;
  }
  EXPECT_FALSE(model.merges().empty());
}

TEST(BpeTrainerTest, LeavesRareCharactersToByteFallback) {
  const BpeModel model = TrainSmall();
  for (const SentencePiece& p : model.pieces()) EXPECT_EQ(p.piece.find("☃"), std::string::npos);
  auto tokenizer = Tokenizer::FromSentencePieceModel(model.ToSentencePieceModel(), "trained");
  ASSERT_TRUE(tokenizer.ok());
  const std::vector<int32_t> ids = (*tokenizer)->Encode("☃", false);
  ASSERT_EQ(ids.size(), 4u);  // "▁" and three bytes
  EXPECT_EQ((*tokenizer)->piece(ids[1]), "<0xE2>");
}

TEST(BpeTrainerTest, NeverMergesAcrossWordsDigitsOrLongerThanAllowed) {
  const BpeModel model = TrainSmall(500, /*max_piece_chars=*/5);
  for (int i = BpeModel::kFirstNormalId; i < model.vocab_size(); ++i) {
    const std::string& p = model.pieces()[i].piece;
    EXPECT_LE(CharCount(p), 5) << p;
    EXPECT_EQ(p.find(kSp, 1), std::string::npos) << "space symbol inside " << p;
    if (CharCount(p) > 1) {
      EXPECT_EQ(p.find_first_of("0123456789"), std::string::npos) << p;
    }
  }
}

TEST(BpeTrainerTest, StopsWhenNoPairOccursTwice) {
  BpeTrainerOptions options;
  options.vocab_size = 4096;
  const BpeModel model = BpeModel::Train({"abab abab", "xyz"}, options);
  EXPECT_LT(model.vocab_size(), 4096);
  EXPECT_GT(model.vocab_size(), BpeModel::kFirstNormalId);
}

TEST(BpeTrainerTest, WritesTokenizerJsonAndModelThatGiveIdenticalIds) {
  const BpeModel model = TrainSmall(800);
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("dtm_bpe_trainer_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  ASSERT_TRUE(model.WriteSentencePieceModel((dir / "tokenizer.model").string()).ok());
  ASSERT_TRUE(model.WriteHfTokenizerJson((dir / "tokenizer.json").string()).ok());
  auto from_model = Tokenizer::FromSentencePieceFile((dir / "tokenizer.model").string());
  auto from_json = Tokenizer::FromHfJsonFile((dir / "tokenizer.json").string());
  ASSERT_TRUE(from_model.ok()) << from_model.status().ToString();
  ASSERT_TRUE(from_json.ok()) << from_json.status().ToString();
  EXPECT_EQ((*from_model)->vocab_size(), (*from_json)->vocab_size());
  std::vector<std::string> texts = Corpus(500);
  for (const char* extra :
       {"café naïve", "日本語のテキスト", "🙂👍🏽", "  two  spaces ", "", "a\nb", "Résumé 2024"}) {
    texts.push_back(extra);
  }
  for (const std::string& text : texts) {
    EXPECT_EQ((*from_model)->Encode(text, true), (*from_json)->Encode(text, true)) << text;
    EXPECT_EQ((*from_json)->Decode((*from_json)->Encode(text, true)), text);
  }
  std::filesystem::remove_all(dir);
}

TEST(BpeTrainerTest, WritesALlamaShapedTokenizerJson) {
  const nlohmann::json json = nlohmann::json::parse(TrainSmall().ToHfTokenizerJson());
  const nlohmann::json& model = json.at("model");
  EXPECT_EQ(model.at("type"), "BPE");
  EXPECT_EQ(model.at("byte_fallback"), true);
  EXPECT_EQ(model.at("fuse_unk"), true);
  EXPECT_EQ(model.at("unk_token"), "<unk>");
  EXPECT_EQ(model.at("vocab").size(), 500u);
  EXPECT_EQ(model.at("vocab").at("<0x41>"), 3 + 0x41);
  EXPECT_FALSE(model.at("merges").empty());
  EXPECT_EQ(json.at("normalizer").at("normalizers")[0].at("type"), "Prepend");
  EXPECT_EQ(json.at("normalizer").at("normalizers")[1].at("pattern").at("String"), " ");
  EXPECT_EQ(json.at("decoder").at("decoders").size(), 4u);
  EXPECT_EQ(json.at("decoder").at("decoders")[3].at("type"), "Strip");
  ASSERT_EQ(json.at("added_tokens").size(), 3u);
  EXPECT_EQ(json.at("added_tokens")[1].at("content"), "<s>");
  EXPECT_EQ(json.at("added_tokens")[1].at("special"), true);
}

TEST(BpeTrainerTest, TrainsOnAHundredThousandWordsInUnderAFewSeconds) {
  const std::vector<std::string> texts = Corpus(10000);  // about 120k words
  BpeTrainerOptions options;
  options.vocab_size = 2000;
  const auto start = std::chrono::steady_clock::now();
  const BpeModel model = BpeModel::Train(texts, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 5.0);
  EXPECT_GT(model.vocab_size(), 300);
}

}  // namespace
}  // namespace dtm
