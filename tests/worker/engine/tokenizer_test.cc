#include "worker/engine/tokenizer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "worker/engine/bpe_trainer.h"

namespace dtm {
namespace {

const std::string kSp = "\xE2\x96\x81";  // "▁"

// A Llama-style SentencePiece model: <unk>, <s>, </s>, the 256 byte pieces (unless `bytes` is false),
// then `pieces` as (piece, score, type).
struct Piece {
  std::string text;
  float score;
  PieceType type = PieceType::kNormal;
};
SentencePieceModel SpmModel(const std::vector<Piece>& pieces, bool bytes = true) {
  SentencePieceModel model = LlamaStyleSentencePieceModel();
  model.trainer_spec.byte_fallback = bytes;
  model.pieces = {
      {"<unk>", 0, PieceType::kUnknown}, {"<s>", 0, PieceType::kControl}, {"</s>", 0, PieceType::kControl}};
  for (int b = 0; bytes && b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    model.pieces.push_back({name, 0, PieceType::kByte});
  }
  for (const Piece& p : pieces) model.pieces.push_back({p.text, p.score, p.type});
  model.trainer_spec.vocab_size = static_cast<int32_t>(model.pieces.size());
  return model;
}

std::unique_ptr<Tokenizer> FromSpm(const SentencePieceModel& model) {
  auto tokenizer = Tokenizer::FromSentencePieceModel(model, "test.model");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

// A Llama-2-shaped tokenizer.json over <unk>, <s>, </s>, the byte pieces, then `pieces`, with
// `merges`; `normalizer` and `pre_tokenizer` replace Llama's when given.
nlohmann::json HfJson(const std::vector<std::string>& pieces, const std::vector<std::string>& merges) {
  nlohmann::json vocab = nlohmann::json::object();
  vocab["<unk>"] = 0;
  vocab["<s>"] = 1;
  vocab["</s>"] = 2;
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  for (const std::string& p : pieces) vocab[p] = vocab.size();
  nlohmann::json added = nlohmann::json::array();
  for (int id = 0; id < 3; ++id) {
    added.push_back({{"id", id},
                     {"content", id == 0   ? "<unk>"
                                 : id == 1 ? "<s>"
                                           : "</s>"},
                     {"special", true}});
  }
  return {{"version", "1.0"},
          {"added_tokens", added},
          {"normalizer",
           {{"type", "Sequence"},
            {"normalizers",
             {{{"type", "Prepend"}, {"prepend", kSp}},
              {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSp}}}}}},
          {"pre_tokenizer", nullptr},
          {"decoder",
           {{"type", "Sequence"},
            {"decoders",
             {{{"type", "Replace"}, {"pattern", {{"String", kSp}}}, {"content", " "}},
              {{"type", "ByteFallback"}},
              {{"type", "Fuse"}},
              {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}}},
          {"model",
           {{"type", "BPE"},
            {"unk_token", "<unk>"},
            {"fuse_unk", true},
            {"byte_fallback", true},
            {"vocab", vocab},
            {"merges", merges}}}};
}

std::unique_ptr<Tokenizer> FromJson(const nlohmann::json& json) {
  auto tokenizer = Tokenizer::FromHfJson(json.dump(), "", "test.json");
  EXPECT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
  return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
}

std::vector<std::string> Pieces(const Tokenizer& tokenizer, const std::vector<int32_t>& ids) {
  std::vector<std::string> pieces;
  for (int32_t id : ids) pieces.push_back(tokenizer.piece(id));
  return pieces;
}

// A small corpus with repeated words, accents and digits, for trained tokenizers.
std::vector<std::string> SmallCorpus() {
  std::vector<std::string> texts;
  for (int i = 0; i < 50; ++i) {
    texts.push_back("the quick brown fox jumps over the lazy dog " + std::to_string(i * 37));
    texts.push_back("a naïve café serves crème brûlée to the quick reader");
    texts.push_back("the dog and the fox were friends for " + std::to_string(i) + " years");
  }
  return texts;
}

class TokenizerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    BpeTrainerOptions options;
    options.vocab_size = 400;
    model_ = new BpeModel(BpeModel::Train(SmallCorpus(), options));
  }
  static std::unique_ptr<Tokenizer> TrainedFromModel() { return FromSpm(model_->ToSentencePieceModel()); }
  static std::unique_ptr<Tokenizer> TrainedFromJson() {
    auto tokenizer = Tokenizer::FromHfJson(model_->ToHfTokenizerJson(), "", "trained.json");
    EXPECT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    return tokenizer.ok() ? std::move(*tokenizer) : nullptr;
  }
  static BpeModel* model_;
};
BpeModel* TokenizerTest::model_ = nullptr;

const std::vector<std::string> kRoundTripTexts = {
    "the quick brown fox",
    "café naïve",
    "日本語のテキスト",
    "🙂👍🏽",
    "  leading spaces",
    "trailing spaces  ",
    "multiple   spaces   inside",
    "line\nbreaks\n\nand\r\nreturns\n",
    "\ttab first",
    "",
    " ",
    "x",
    "digits 0123456789 and 3.14159",
};

TEST_F(TokenizerTest, DecodesWhatItEncodesFromBothFileFormats) {
  for (const auto& tokenizer : {TrainedFromModel(), TrainedFromJson()}) {
    ASSERT_NE(tokenizer, nullptr);
    for (const std::string& text : kRoundTripTexts) {
      EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text, /*add_bos=*/true)), text) << text;
      EXPECT_EQ(tokenizer->Decode(tokenizer->Encode(text, /*add_bos=*/false)), text) << text;
    }
  }
}

TEST_F(TokenizerTest, GivesTheSameIdsFromTokenizerModelAndTokenizerJson) {
  auto from_model = TrainedFromModel();
  auto from_json = TrainedFromJson();
  ASSERT_NE(from_model, nullptr);
  ASSERT_NE(from_json, nullptr);
  for (const std::string& text : kRoundTripTexts) {
    EXPECT_EQ(from_model->Encode(text, false), from_json->Encode(text, false)) << text;
  }
  for (const std::string& text : SmallCorpus()) {
    EXPECT_EQ(from_model->Encode(text, true), from_json->Encode(text, true));
  }
}

TEST_F(TokenizerTest, EncodesCharactersOutsideTheVocabularyAsBytePieces) {
  for (const auto& tokenizer : {TrainedFromModel(), TrainedFromJson()}) {
    ASSERT_NE(tokenizer, nullptr);
    const std::vector<int32_t> ids = tokenizer->Encode("日", false);
    EXPECT_EQ(Pieces(*tokenizer, ids), (std::vector<std::string>{kSp, "<0xE6>", "<0x97>", "<0xA5>"}));
    EXPECT_EQ(tokenizer->Decode(ids), "日");
  }
}

TEST_F(TokenizerTest, EncodesInvalidUtf8AsOneBytePiecePerByte) {
  for (const auto& tokenizer : {TrainedFromModel(), TrainedFromJson()}) {
    ASSERT_NE(tokenizer, nullptr);
    const std::vector<int32_t> ids = tokenizer->Encode("a\xFF\xE6\x97z", false);
    const std::vector<std::string> pieces = Pieces(*tokenizer, ids);
    ASSERT_GE(pieces.size(), 4u);
    EXPECT_EQ(std::vector<std::string>(pieces.end() - 4, pieces.end()),
              (std::vector<std::string>{"<0xFF>", "<0xE6>", "<0x97>", "z"}));
    // Decoding never yields invalid UTF-8: each stray byte becomes U+FFFD.
    EXPECT_EQ(tokenizer->Decode(ids), "a\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBDz");
  }
}

TEST_F(TokenizerTest, AddsBosOnlyWhenAsked) {
  auto tokenizer = TrainedFromModel();
  EXPECT_EQ(tokenizer->bos_id(), 1);
  EXPECT_EQ(tokenizer->eos_id(), 2);
  EXPECT_EQ(tokenizer->unk_id(), 0);
  EXPECT_EQ(tokenizer->Encode("", true), std::vector<int32_t>{1});
  EXPECT_TRUE(tokenizer->Encode("", false).empty());
  const std::vector<int32_t> with = tokenizer->Encode("the fox", true);
  const std::vector<int32_t> without = tokenizer->Encode("the fox", false);
  ASSERT_EQ(with.size(), without.size() + 1);
  EXPECT_EQ(with[0], 1);
  EXPECT_EQ(std::vector<int32_t>(with.begin() + 1, with.end()), without);
}

TEST_F(TokenizerTest, DecodeSkipsControlTokensAndRemovesOnlyTheDummySpace) {
  auto tokenizer = TrainedFromModel();
  std::vector<int32_t> ids = tokenizer->Encode(" the fox", true);
  ids.push_back(tokenizer->eos_id());
  EXPECT_EQ(tokenizer->Decode(ids), " the fox");
  EXPECT_EQ(tokenizer->Decode({-5, 1, 100000}), "");
  EXPECT_EQ(tokenizer->Decode({0}), " \xE2\x81\x87 ");  // <unk> as SentencePiece shows it
}

TEST_F(TokenizerTest, LooksUpPiecesAndIds) {
  auto tokenizer = TrainedFromJson();
  EXPECT_EQ(tokenizer->vocab_size(), model_->vocab_size());
  EXPECT_EQ(tokenizer->PieceToId("<s>"), 1);
  EXPECT_EQ(tokenizer->PieceToId("<0x0A>"), 3 + 10);
  EXPECT_EQ(tokenizer->PieceToId("no such piece"), -1);
  EXPECT_EQ(tokenizer->piece(2), "</s>");
  EXPECT_EQ(tokenizer->piece(-1), "");
  EXPECT_EQ(tokenizer->piece_type(1), PieceType::kControl);
  EXPECT_EQ(tokenizer->piece_type(3), PieceType::kByte);
}

TEST(TokenizerMergeRuleTest, SentencePieceMergesThePairWithTheBestPieceScore) {
  const std::vector<Piece> base = {{kSp, -10}, {"a", -11}, {"b", -12}, {"c", -13}};
  std::vector<Piece> bc_first = base;
  bc_first.push_back({"ab", -3});
  bc_first.push_back({"bc", -2});
  auto tokenizer = FromSpm(SpmModel(bc_first));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("abc", false)), (std::vector<std::string>{kSp, "a", "bc"}));
  std::vector<Piece> ab_first = base;
  ab_first.push_back({"ab", -1});
  ab_first.push_back({"bc", -2});
  tokenizer = FromSpm(SpmModel(ab_first));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("abc", false)), (std::vector<std::string>{kSp, "ab", "c"}));
}

TEST(TokenizerMergeRuleTest, SentencePieceBreaksScoreTiesTowardsTheLeft) {
  auto tokenizer = FromSpm(SpmModel({{kSp, -10}, {"a", -11}, {"aa", -1}}));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("aaa", false)), (std::vector<std::string>{kSp, "aa", "a"}));
}

TEST(TokenizerMergeRuleTest, SentencePieceSplitsUnusedPiecesBackIntoTheirParts) {
  auto tokenizer = FromSpm(SpmModel(
      {{kSp, -10}, {"a", -11}, {"b", -12}, {"c", -13}, {"ab", -1, PieceType::kUnused}, {"abc", -2}}));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("abc", false)), (std::vector<std::string>{kSp, "abc"}));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("ab", false)), (std::vector<std::string>{kSp, "a", "b"}));
}

TEST(TokenizerMergeRuleTest, SentencePieceKeepsUserDefinedPiecesWhole) {
  auto tokenizer = FromSpm(
      SpmModel({{kSp, -10}, {"a", -11}, {"b", -12}, {"ab", -1}, {"<b>", 0, PieceType::kUserDefined}}));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("a<b>b", false)),
            (std::vector<std::string>{kSp, "a", "<b>", "b"}));
}

TEST(TokenizerMergeRuleTest, SentencePieceFusesRunsOfUnknownCharactersWithoutByteFallback) {
  auto tokenizer = FromSpm(SpmModel({{kSp, -10}, {"a", -11}, {"b", -12}}, /*bytes=*/false));
  EXPECT_EQ(tokenizer->Encode("aßü日b", false), (std::vector<int32_t>{3, 4, 0, 5}));
}

TEST(TokenizerMergeRuleTest, SentencePieceRemovesExtraWhitespaceWhenTheModelSaysSo) {
  SentencePieceModel model = SpmModel({{kSp, -10}, {"a", -11}, {"b", -12}});
  model.normalizer_spec.remove_extra_whitespaces = true;
  auto tokenizer = FromSpm(model);
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("  a   b  ", false)),
            (std::vector<std::string>{kSp, "a", kSp, "b"}));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("a" + kSp + kSp, false)),
            (std::vector<std::string>{kSp, "a"}));
  EXPECT_TRUE(tokenizer->Encode("    ", false).empty());
}

TEST(TokenizerMergeRuleTest, HfJsonAppliesTheMergeOfLowestRank) {
  const std::vector<std::string> pieces = {kSp, "a", "b", "c", "ab", "bc"};
  auto tokenizer = FromJson(HfJson(pieces, {"b c", "a b"}));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("abc", false)), (std::vector<std::string>{kSp, "a", "bc"}));
  tokenizer = FromJson(HfJson(pieces, {"a b", "b c"}));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("abc", false)), (std::vector<std::string>{kSp, "ab", "c"}));
  // Merges only as listed: "abc" is a piece, but no listed merge makes it from "a" + "bc".
  tokenizer = FromJson(HfJson({kSp, "a", "b", "c", "ab", "bc", "abc"}, {"b c", "a b", "ab c"}));
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("abc", false)), (std::vector<std::string>{kSp, "a", "bc"}));
}

TEST(TokenizerMergeRuleTest, HfJsonAcceptsMergesAsPairs) {
  nlohmann::json json = HfJson({kSp, "a", "b", "ab"}, {});
  json["model"]["merges"] = nlohmann::json::array({nlohmann::json::array({"a", "b"})});
  auto tokenizer = FromJson(json);
  ASSERT_NE(tokenizer, nullptr);
  EXPECT_EQ(Pieces(*tokenizer, tokenizer->Encode("ab", false)), (std::vector<std::string>{kSp, "ab"}));
}

TEST(TokenizerMergeRuleTest, HfJsonWithMetaspacePrependsOnlyAMissingSpace) {
  nlohmann::json llama = HfJson({kSp, "a"}, {});
  nlohmann::json metaspace = llama;
  metaspace["normalizer"] = nullptr;
  metaspace["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", kSp}, {"prepend_scheme", "first"}, {"split", false}};
  metaspace["decoder"] = {
      {"type", "Metaspace"}, {"replacement", kSp}, {"prepend_scheme", "first"}, {"split", false}};
  auto with_normalizer = FromJson(llama);
  auto with_metaspace = FromJson(metaspace);
  EXPECT_EQ(Pieces(*with_normalizer, with_normalizer->Encode(" a", false)),
            (std::vector<std::string>{kSp, kSp, "a"}));
  EXPECT_EQ(Pieces(*with_metaspace, with_metaspace->Encode(" a", false)),
            (std::vector<std::string>{kSp, "a"}));
  EXPECT_EQ(Pieces(*with_metaspace, with_metaspace->Encode("a a", false)),
            (std::vector<std::string>{kSp, "a", kSp, "a"}));
  EXPECT_EQ(with_metaspace->Decode(with_metaspace->Encode("a a", true)), "a a");
}

TEST(TokenizerMergeRuleTest, HfJsonMetaspaceSplitKeepsMergesInsideWords) {
  nlohmann::json json = HfJson({kSp, "a", "a" + kSp}, {"a " + kSp});
  json["normalizer"] = nullptr;
  json["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kSp}, {"add_prefix_space", true}};
  auto split = FromJson(json);
  EXPECT_EQ(Pieces(*split, split->Encode("a a", false)), (std::vector<std::string>{kSp, "a", kSp, "a"}));
  json["pre_tokenizer"]["split"] = false;
  auto unsplit = FromJson(json);
  EXPECT_EQ(Pieces(*unsplit, unsplit->Encode("a a", false)), (std::vector<std::string>{kSp, "a" + kSp, "a"}));
}

TEST(TokenizerLoadTest, RefusesModelsItCannotEncodeFaithfully) {
  SentencePieceModel unigram = SpmModel({{kSp, -1}});
  unigram.trainer_spec.model_type = SentencePieceTrainerSpec::kUnigram;
  EXPECT_EQ(Tokenizer::FromSentencePieceModel(unigram, "u.model").status().code(),
            StatusCode::kUnimplemented);
  SentencePieceModel nfkc = SpmModel({{kSp, -1}});
  nfkc.normalizer_spec.name = "nmt_nfkc";
  nfkc.normalizer_spec.precompiled_charsmap = "\x01\x02";
  EXPECT_EQ(Tokenizer::FromSentencePieceModel(nfkc, "n.model").status().code(), StatusCode::kUnimplemented);
  SentencePieceModel missing_byte = SpmModel({{kSp, -1}});
  missing_byte.pieces.erase(missing_byte.pieces.begin() + 3);
  EXPECT_FALSE(Tokenizer::FromSentencePieceModel(missing_byte, "b.model").ok());
  SentencePieceModel no_unk = SpmModel({{kSp, -1}});
  no_unk.pieces[0].type = PieceType::kControl;
  EXPECT_FALSE(Tokenizer::FromSentencePieceModel(no_unk, "k.model").ok());
  SentencePieceModel twice = SpmModel({{kSp, -1}, {kSp, -2}});
  EXPECT_FALSE(Tokenizer::FromSentencePieceModel(twice, "t.model").ok());

  nlohmann::json byte_level = HfJson({kSp}, {});
  byte_level["pre_tokenizer"] = {{"type", "ByteLevel"}};
  auto refused = Tokenizer::FromHfJson(byte_level.dump(), "", "/m/tokenizer.json");
  EXPECT_EQ(refused.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(refused.status().message().find("ByteLevel"), std::string::npos);
  nlohmann::json bad_merge = HfJson({kSp, "a"}, {"a z"});
  EXPECT_FALSE(Tokenizer::FromHfJson(bad_merge.dump(), "", "x.json").ok());
  auto not_json = Tokenizer::FromHfJson("{not json", "", "/m/tokenizer.json");
  ASSERT_FALSE(not_json.ok());
  EXPECT_NE(not_json.status().message().find("/m/tokenizer.json"), std::string::npos);
}

// Found by fuzz/hf_tokenizer_json_fuzzer: an id written as 1e75 was converted to an integer unchecked
// (undefined behaviour). HF's reader takes integers only, and so does this one now.
TEST(TokenizerLoadTest, RefusesTokenizerJsonIdsThatAreNotNonNegativeIntegers) {
  for (const nlohmann::json& bad :
       {nlohmann::json(1e75), nlohmann::json(3.5), nlohmann::json(-1), nlohmann::json("3")}) {
    nlohmann::json vocab_id = HfJson({kSp, "a"}, {});
    vocab_id["model"]["vocab"]["a"] = bad;
    nlohmann::json added_id = HfJson({kSp}, {});
    added_id["added_tokens"][1]["id"] = bad;
    nlohmann::json strip_start = HfJson({kSp}, {});
    strip_start["decoder"]["decoders"][3]["start"] = bad;
    for (const auto& [json, field] :
         {std::pair{vocab_id, "the id of 'a'"}, std::pair{added_id, "an added token's id"},
          std::pair{strip_start, "Strip decoder's start"}}) {
      auto refused = Tokenizer::FromHfJson(json.dump(), "", "t.json");
      ASSERT_FALSE(refused.ok()) << field << " = " << bad;
      EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
      EXPECT_NE(refused.status().message().find(std::string("t.json: ") + field +
                                                " must be a non-negative integer"),
                std::string::npos)
          << refused.status().message();
    }
  }
}

// Found by fuzz/sentencepiece_model_fuzzer: Decode emits a piece's bytes as they are, so a
// tokenizer.model piece that is not UTF-8 broke Decode's promise of valid UTF-8.
TEST(TokenizerLoadTest, RefusesTokenizerModelPiecesThatAreNotUtf8) {
  for (const std::string& piece : {std::string("a\xFF"), std::string("\xC3"), std::string("\xED\xA0\x80")}) {
    auto refused = Tokenizer::FromSentencePieceModel(SpmModel({{kSp, -1}, {piece, -2}}), "u.model");
    ASSERT_FALSE(refused.ok());
    EXPECT_EQ(refused.status().code(), StatusCode::kDataLoss);
    EXPECT_NE(refused.status().message().find("u.model: piece 260 is not valid UTF-8"), std::string::npos)
        << refused.status().message();
  }
  EXPECT_TRUE(Tokenizer::FromSentencePieceModel(SpmModel({{kSp, -1}, {"\xC3\xA9", -2}}), "u.model").ok());
}

// Found with fuzz/hf_tokenizer_json_fuzzer on a crafted input (libFuzzer's length limit keeps it from
// nesting this deep itself): a normalizer nested 10,000 levels deep (under ASan; more without) overflowed
// the stack when it was copied.
TEST(TokenizerLoadTest, RefusesTokenizerJsonNestedTooDeeply) {
  const auto nested = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  // The text is put together by hand: dumping such a value would recurse as deep.
  nlohmann::json llama = HfJson({kSp}, {});
  llama["normalizer"] = "DEEP";
  std::string deep = llama.dump();
  deep.replace(deep.find("\"DEEP\""), 6, nested(200'000));
  auto refused = Tokenizer::FromHfJson(deep, "", "d.json");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(refused.status().message().find("d.json: nests deeper than 64 levels"), std::string::npos)
      << refused.status().message();
  auto deep_config = Tokenizer::FromHfJson(HfJson({kSp}, {}).dump(), "{\"x\": " + nested(64) + "}", "d.json");
  EXPECT_EQ(deep_config.status().code(), StatusCode::kInvalidArgument);
  // 64 levels in all is what a file may hold: here an unknown key beside the model.
  nlohmann::json deepest_allowed = HfJson({kSp}, {});
  deepest_allowed["x"] = nlohmann::json::parse(nested(63));
  EXPECT_TRUE(Tokenizer::FromHfJson(deepest_allowed.dump(), "", "d.json").ok());
}

TEST_F(TokenizerTest, LoadsFromAModelDirPreferringTokenizerJson) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("dtm_tokenizer_dir_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto missing = Tokenizer::FromModelDir(dir.string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find(dir.string()), std::string::npos);

  ASSERT_TRUE(model_->WriteSentencePieceModel((dir / "tokenizer.model").string()).ok());
  auto from_model = Tokenizer::FromModelDir(dir.string());
  ASSERT_TRUE(from_model.ok()) << from_model.status().ToString();
  EXPECT_EQ((*from_model)->vocab_size(), model_->vocab_size());

  // A smaller tokenizer.json beside it shows which file was read.
  std::ofstream((dir / "tokenizer.json").string()) << HfJson({kSp, "a"}, {}).dump();
  auto from_json = Tokenizer::FromModelDir(dir.string());
  ASSERT_TRUE(from_json.ok()) << from_json.status().ToString();
  EXPECT_EQ((*from_json)->vocab_size(), 3 + 256 + 2);
  std::filesystem::remove_all(dir);
}

TEST_F(TokenizerTest, EncodesMegabytesQuicklyWithAndWithoutSpaces) {
  std::string prose;
  while (prose.size() < (4 << 20)) {
    for (const std::string& text : SmallCorpus()) prose += text + (prose.size() % 3 ? " " : "\n");
  }
  std::string unspaced;
  while (unspaced.size() < (1 << 20)) unspaced += "thequickbrownfoxjumpsoverthelazydog日本語";
  const std::string runs(1 << 20, 'a');
  for (const auto& tokenizer : {TrainedFromModel(), TrainedFromJson()}) {
    for (const std::string* text : std::vector<const std::string*>{&prose, &unspaced, &runs}) {
      const auto start = std::chrono::steady_clock::now();
      const std::vector<int32_t> ids = tokenizer->Encode(*text, false);
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      EXPECT_LT(seconds, 5.0) << text->size() << " bytes";
      EXPECT_EQ(tokenizer->Decode(ids), *text);
    }
  }
}

TEST(TokenizerSpeedTest, EncodesLongRunsThatNoCutCanSplitQuickly) {
  // "aa" and "aaaa" are pieces, so a run of "a" is one chunk of a million symbols.
  auto spm = FromSpm(SpmModel({{kSp, -10}, {"a", -11}, {"aa", -1}, {"aaaa", -2}}));
  auto hf = FromJson(HfJson({kSp, "a", "aa", "aaaa"}, {"a a", "aa aa"}));
  const std::string run(1 << 20, 'a');
  for (const Tokenizer* tokenizer : {spm.get(), hf.get()}) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int32_t> ids = tokenizer->Encode(run, false);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_LT(seconds, 5.0);
    EXPECT_EQ(ids.size(), 1u + (1 << 18));
    EXPECT_EQ(tokenizer->Decode(ids), run);
  }
}

}  // namespace
}  // namespace dtm
