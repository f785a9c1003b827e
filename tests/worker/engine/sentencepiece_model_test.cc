#include "worker/engine/sentencepiece_model.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>

namespace dtm {
namespace {

SentencePieceModel SampleModel() {
  SentencePieceModel model = LlamaStyleSentencePieceModel();
  model.pieces = {{"<unk>", 0.0f, PieceType::kUnknown},
                  {"<s>", 0.0f, PieceType::kControl},
                  {"</s>", 0.0f, PieceType::kControl},
                  {"<0x41>", 0.0f, PieceType::kByte},
                  {"\xE2\x96\x81the", -1.5f, PieceType::kNormal},
                  {"<user>", 0.0f, PieceType::kUserDefined},
                  {"unused", -7.25f, PieceType::kUnused}};
  model.trainer_spec.vocab_size = 7;
  return model;
}

void ExpectSameModel(const SentencePieceModel& a, const SentencePieceModel& b) {
  ASSERT_EQ(a.pieces.size(), b.pieces.size());
  for (size_t i = 0; i < a.pieces.size(); ++i) {
    EXPECT_EQ(a.pieces[i].piece, b.pieces[i].piece) << i;
    EXPECT_EQ(a.pieces[i].score, b.pieces[i].score) << i;
    EXPECT_EQ(a.pieces[i].type, b.pieces[i].type) << i;
  }
  EXPECT_EQ(a.trainer_spec.model_type, b.trainer_spec.model_type);
  EXPECT_EQ(a.trainer_spec.vocab_size, b.trainer_spec.vocab_size);
  EXPECT_EQ(a.trainer_spec.byte_fallback, b.trainer_spec.byte_fallback);
  EXPECT_EQ(a.trainer_spec.unk_id, b.trainer_spec.unk_id);
  EXPECT_EQ(a.trainer_spec.bos_id, b.trainer_spec.bos_id);
  EXPECT_EQ(a.trainer_spec.eos_id, b.trainer_spec.eos_id);
  EXPECT_EQ(a.trainer_spec.pad_id, b.trainer_spec.pad_id);
  EXPECT_EQ(a.trainer_spec.other_fields, b.trainer_spec.other_fields);
  EXPECT_EQ(a.normalizer_spec.name, b.normalizer_spec.name);
  EXPECT_EQ(a.normalizer_spec.precompiled_charsmap, b.normalizer_spec.precompiled_charsmap);
  EXPECT_EQ(a.normalizer_spec.add_dummy_prefix, b.normalizer_spec.add_dummy_prefix);
  EXPECT_EQ(a.normalizer_spec.remove_extra_whitespaces, b.normalizer_spec.remove_extra_whitespaces);
  EXPECT_EQ(a.normalizer_spec.escape_whitespaces, b.normalizer_spec.escape_whitespaces);
  EXPECT_EQ(a.normalizer_spec.other_fields, b.normalizer_spec.other_fields);
  EXPECT_EQ(a.other_fields, b.other_fields);
}

// A length-delimited field: tag, length, payload (lengths under 128 only).
std::string Field(int number, const std::string& payload) {
  return std::string(1, static_cast<char>(number << 3 | 2)) + static_cast<char>(payload.size()) + payload;
}

TEST(SentencePieceModelTest, RoundTripsEveryModelledField) {
  const SentencePieceModel model = SampleModel();
  auto parsed = ParseSentencePieceModel(SerializeSentencePieceModel(model), "sample.model");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ExpectSameModel(model, *parsed);
  EXPECT_EQ(parsed->trainer_spec.pad_id, -1);
  EXPECT_EQ(parsed->trainer_spec.model_type, SentencePieceTrainerSpec::kBpe);
  EXPECT_TRUE(parsed->trainer_spec.byte_fallback);
  EXPECT_FALSE(parsed->normalizer_spec.remove_extra_whitespaces);
  EXPECT_EQ(parsed->normalizer_spec.name, "identity");
}

TEST(SentencePieceModelTest, SerializationIsStableAcrossRoundTrips) {
  const std::string bytes = SerializeSentencePieceModel(SampleModel());
  auto parsed = ParseSentencePieceModel(bytes, "sample.model");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(SerializeSentencePieceModel(*parsed), bytes);
}

TEST(SentencePieceModelTest, AppliesProtoDefaultsToMissingFields) {
  // One piece {piece: "a"} and nothing else.
  auto parsed = ParseSentencePieceModel(Field(1, Field(1, "a")), "minimal.model");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ASSERT_EQ(parsed->pieces.size(), 1u);
  EXPECT_EQ(parsed->pieces[0].type, PieceType::kNormal);
  EXPECT_EQ(parsed->trainer_spec.model_type, SentencePieceTrainerSpec::kUnigram);
  EXPECT_FALSE(parsed->trainer_spec.byte_fallback);
  EXPECT_EQ(parsed->trainer_spec.unk_id, 0);
  EXPECT_EQ(parsed->trainer_spec.bos_id, 1);
  EXPECT_EQ(parsed->trainer_spec.eos_id, 2);
  EXPECT_EQ(parsed->trainer_spec.pad_id, -1);
  EXPECT_TRUE(parsed->normalizer_spec.add_dummy_prefix);
  EXPECT_TRUE(parsed->normalizer_spec.remove_extra_whitespaces);
  EXPECT_TRUE(parsed->normalizer_spec.escape_whitespaces);
}

TEST(SentencePieceModelTest, KeepsFieldsItDoesNotModelOfEveryWireType) {
  // Unknown fields: varint 7, fixed64 8, bytes 9, fixed32 10, and a group 11 holding a varint.
  const std::string unknown = std::string("\x38\x05", 2) +
                              std::string(
                                  "\x41"
                                  "12345678",
                                  9) +
                              Field(9, "xyz") +
                              std::string(
                                  "\x55"
                                  "abcd",
                                  5) +
                              std::string("\x5b\x08\x01\x5c", 4);
  const std::string trainer = std::string("\x18\x02", 2) + unknown;  // model_type BPE + unknowns
  const std::string normalizer = Field(1, "identity") + unknown;
  const std::string bytes = Field(1, Field(1, "a")) + Field(2, trainer) + Field(3, normalizer) + unknown;
  auto parsed = ParseSentencePieceModel(bytes, "unknown.model");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_EQ(parsed->trainer_spec.model_type, SentencePieceTrainerSpec::kBpe);
  EXPECT_EQ(parsed->trainer_spec.other_fields, unknown);
  EXPECT_EQ(parsed->normalizer_spec.other_fields, unknown);
  EXPECT_EQ(parsed->other_fields, unknown);
  auto again = ParseSentencePieceModel(SerializeSentencePieceModel(*parsed), "again.model");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  ExpectSameModel(*parsed, *again);
}

TEST(SentencePieceModelTest, RejectsMalformedFilesNamingTheFile) {
  const std::string good = SerializeSentencePieceModel(SampleModel());
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"truncated varint", std::string("\x0a\x80", 2)},
      {"length past the end", std::string("\x0a\x05"
                                          "ab",
                                          4)},
      {"last byte missing", good.substr(0, good.size() - 1)},
      {"truncated float", Field(1, std::string("\x0a\x01"
                                               "a"
                                               "\x15\x00\x00",
                                               6))},
      {"field number zero", std::string("\x00\x01", 2)},
      {"varint of eleven bytes", std::string("\x38") + std::string(10, '\xff') + "\x01"},
      {"unterminated group", std::string("\x5b\x08\x01", 3)},
      {"mismatched end of group", std::string("\x5b\x64", 2)},
      {"end of group without a start", std::string("\x5c", 1)},
      {"unknown wire type", std::string("\x3e\x00", 2)},
      {"piece type out of range", Field(1, std::string("\x0a\x01"
                                                       "a"
                                                       "\x18\x09",
                                                       5))},
      {"score with the wrong wire type", Field(1, std::string("\x0a\x01"
                                                              "a"
                                                              "\x10\x01",
                                                              5))},
      {"no pieces", Field(2, std::string("\x18\x02", 2))},
  };
  for (const auto& [what, bytes] : cases) {
    auto parsed = ParseSentencePieceModel(bytes, "/models/broken/tokenizer.model");
    ASSERT_FALSE(parsed.ok()) << what;
    EXPECT_NE(parsed.status().message().find("/models/broken/tokenizer.model"), std::string::npos)
        << what << ": " << parsed.status().message();
    EXPECT_EQ(parsed.status().message().find('\n'), std::string::npos) << what;
  }
}

TEST(SentencePieceModelTest, WritesAndReadsFiles) {
  const std::string path =
      (std::filesystem::temp_directory_path() / ("dtm_spm_test_" + std::to_string(::getpid()) + ".model"))
          .string();
  ASSERT_TRUE(WriteSentencePieceModelFile(SampleModel(), path).ok());
  auto read = ReadSentencePieceModelFile(path);
  ASSERT_TRUE(read.ok()) << read.status().ToString();
  ExpectSameModel(SampleModel(), *read);
  std::remove(path.c_str());
}

TEST(SentencePieceModelTest, ReportsAMissingFileByName) {
  auto read = ReadSentencePieceModelFile("/nonexistent/dir/tokenizer.model");
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.status().code(), StatusCode::kNotFound);
  EXPECT_NE(read.status().message().find("/nonexistent/dir/tokenizer.model"), std::string::npos);
}

}  // namespace
}  // namespace dtm
