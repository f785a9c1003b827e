// SentencePiece `tokenizer.model` files (the protobuf message ModelProto of sentencepiece_model.proto),
// read and written by hand so that the engine needs neither libprotobuf nor libsentencepiece.
//
// Only the fields that change how a model encodes are modelled; every other field of ModelProto,
// TrainerSpec and NormalizerSpec is kept as raw wire bytes and written back unchanged, so reading and
// writing a file such as Llama-2's keeps it equivalent.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace dtm {

// SentencePiece's word-boundary mark "▁" (U+2581), which stands for a space in pieces.
inline constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";

// ModelProto.SentencePiece.Type.
enum class PieceType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct SentencePiece {
  std::string piece;
  float score = 0.0f;
  PieceType type = PieceType::kNormal;
};

// TrainerSpec; the proto field number is in each comment, the defaults are the proto's.
struct SentencePieceTrainerSpec {
  enum ModelType : int32_t { kUnigram = 1, kBpe = 2, kWord = 3, kChar = 4 };
  int32_t model_type = kUnigram;  // 3
  int32_t vocab_size = 8000;      // 4
  bool byte_fallback = false;     // 35
  int32_t unk_id = 0;             // 40
  int32_t bos_id = 1;             // 41
  int32_t eos_id = 2;             // 42
  int32_t pad_id = -1;            // 43
  std::string other_fields;       // every other field, as wire bytes
};

// NormalizerSpec; field numbers in comments, defaults are the proto's.
struct SentencePieceNormalizerSpec {
  std::string name;                      // 1
  std::string precompiled_charsmap;      // 2; empty means the identity normalizer
  bool add_dummy_prefix = true;          // 3
  bool remove_extra_whitespaces = true;  // 4
  bool escape_whitespaces = true;        // 5
  std::string other_fields;              // every other field, as wire bytes
};

struct SentencePieceModel {
  std::vector<SentencePiece> pieces;            // 1
  SentencePieceTrainerSpec trainer_spec;        // 2
  SentencePieceNormalizerSpec normalizer_spec;  // 3
  std::string other_fields;                     // self_test_data, denormalizer_spec, ... as wire bytes
};

// Parses a serialized ModelProto; `source` (the file name) prefixes every error message.
StatusOr<SentencePieceModel> ParseSentencePieceModel(std::string_view bytes, const std::string& source);
StatusOr<SentencePieceModel> ReadSentencePieceModelFile(const std::string& path);

std::string SerializeSentencePieceModel(const SentencePieceModel& model);
Status WriteSentencePieceModelFile(const SentencePieceModel& model, const std::string& path);

// The spec of a Llama-2 style model: BPE with byte fallback, identity normalizer with a dummy prefix
// and no whitespace removal, <unk>=0, <s>=1, </s>=2, no padding. Pieces are left to the caller.
SentencePieceModel LlamaStyleSentencePieceModel();

}  // namespace dtm
