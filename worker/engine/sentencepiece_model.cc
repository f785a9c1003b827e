#include "worker/engine/sentencepiece_model.h"

#include <cstring>
#include <fstream>
#include <sstream>

namespace dtm {
namespace {

// Protobuf wire types.
constexpr int kVarint = 0;
constexpr int kFixed64 = 1;
constexpr int kLengthDelimited = 2;
constexpr int kStartGroup = 3;
constexpr int kEndGroup = 4;
constexpr int kFixed32 = 5;

// Deeper nesting than this in skipped groups is treated as a corrupt file rather than recursed into.
constexpr int kMaxGroupDepth = 64;

// Field numbers of sentencepiece_model.proto.
namespace model_field {
constexpr uint32_t kPieces = 1, kTrainerSpec = 2, kNormalizerSpec = 3;
}
namespace piece_field {
constexpr uint32_t kPiece = 1, kScore = 2, kType = 3;
}
namespace trainer_field {
constexpr uint32_t kModelType = 3, kVocabSize = 4, kByteFallback = 35, kUnkId = 40, kBosId = 41, kEosId = 42,
                   kPadId = 43;
}
namespace normalizer_field {
constexpr uint32_t kName = 1, kPrecompiledCharsmap = 2, kAddDummyPrefix = 3, kRemoveExtraWhitespaces = 4,
                   kEscapeWhitespaces = 5;
}

// Reads one message's fields from a byte range. Offsets in errors are absolute in the file, so that a
// corrupt nested message is located as precisely as a corrupt top-level one.
class WireReader {
 public:
  WireReader(std::string_view data, size_t base_offset, const std::string& source)
      : data_(data), base_(base_offset), source_(source) {}

  bool done() const { return pos_ >= data_.size(); }
  size_t offset() const { return base_ + pos_; }

  Status Error(const std::string& what) const {
    return DataLossError(source_ + ": malformed SentencePiece model: " + what + " at byte " +
                         std::to_string(offset()));
  }

  Status ReadVarint(uint64_t* value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 70; shift += 7) {
      if (pos_ >= data_.size()) return Error("truncated varint");
      const uint8_t byte = static_cast<uint8_t>(data_[pos_++]);
      if (shift == 63 && byte > 1) return Error("varint longer than 64 bits");
      result |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *value = result;
        return OkStatus();
      }
    }
    return Error("varint longer than 10 bytes");
  }

  Status ReadTag(uint32_t* field, int* wire_type) {
    uint64_t tag = 0;
    RETURN_IF_ERROR(ReadVarint(&tag));
    *field = static_cast<uint32_t>(tag >> 3);
    *wire_type = static_cast<int>(tag & 7);
    if (*field == 0 || (tag >> 3) > 0x1fffffff) return Error("invalid field number");
    return OkStatus();
  }

  Status ReadFixed32(uint32_t* value) {
    if (data_.size() - pos_ < 4) return Error("truncated fixed32");
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(data_[pos_ + i]);
    pos_ += 4;
    *value = v;
    return OkStatus();
  }

  // Returns the payload and its absolute offset (for the nested reader's errors).
  Status ReadLengthDelimited(std::string_view* payload, size_t* payload_offset) {
    uint64_t length = 0;
    RETURN_IF_ERROR(ReadVarint(&length));
    if (length > data_.size() - pos_) return Error("length " + std::to_string(length) + " past the end");
    *payload_offset = offset();
    *payload = data_.substr(pos_, length);
    pos_ += length;
    return OkStatus();
  }

  // Skips the value of a field whose tag was just read.
  Status SkipValue(uint32_t field, int wire_type, int depth = 0) {
    uint64_t ignored = 0;
    std::string_view payload;
    size_t payload_offset = 0;
    switch (wire_type) {
      case kVarint:
        return ReadVarint(&ignored);
      case kFixed64:
        if (data_.size() - pos_ < 8) return Error("truncated fixed64");
        pos_ += 8;
        return OkStatus();
      case kLengthDelimited:
        return ReadLengthDelimited(&payload, &payload_offset);
      case kFixed32:
        if (data_.size() - pos_ < 4) return Error("truncated fixed32");
        pos_ += 4;
        return OkStatus();
      case kStartGroup:
        return SkipGroup(field, depth + 1);
      default:
        return Error("unexpected wire type " + std::to_string(wire_type));
    }
  }

  // The raw bytes, tag included, of the field that began at `field_start` and has just been consumed.
  std::string_view RawSince(size_t field_start) const {
    return data_.substr(field_start - base_, pos_ - (field_start - base_));
  }

 private:
  Status SkipGroup(uint32_t group_field, int depth) {
    if (depth > kMaxGroupDepth) return Error("groups nested too deeply");
    while (true) {
      if (done()) return Error("unterminated group");
      uint32_t field = 0;
      int wire_type = 0;
      RETURN_IF_ERROR(ReadTag(&field, &wire_type));
      if (wire_type == kEndGroup) {
        if (field != group_field) return Error("mismatched end of group");
        return OkStatus();
      }
      RETURN_IF_ERROR(SkipValue(field, wire_type, depth));
    }
  }

  std::string_view data_;
  size_t base_;
  const std::string& source_;
  size_t pos_ = 0;
};

// Reads a varint field's value, checking the wire type first.
Status ReadVarintField(WireReader& reader, int wire_type, const char* name, uint64_t* value) {
  if (wire_type != kVarint) return reader.Error(std::string("field ") + name + " is not a varint");
  return reader.ReadVarint(value);
}

Status ReadStringField(WireReader& reader, int wire_type, const char* name, std::string* value) {
  if (wire_type != kLengthDelimited) return reader.Error(std::string("field ") + name + " is not a string");
  std::string_view payload;
  size_t payload_offset = 0;
  RETURN_IF_ERROR(reader.ReadLengthDelimited(&payload, &payload_offset));
  value->assign(payload.data(), payload.size());
  return OkStatus();
}

// Keeps a field this code does not model, so that it is written back unchanged.
Status KeepUnknownField(WireReader& reader, size_t field_start, uint32_t field, int wire_type,
                        std::string* other_fields) {
  if (wire_type == kEndGroup) return reader.Error("end of group without a start");
  RETURN_IF_ERROR(reader.SkipValue(field, wire_type));
  other_fields->append(reader.RawSince(field_start));
  return OkStatus();
}

// int32 fields are varints of the 64-bit sign extension; protobuf truncates them to 32 bits.
int32_t ToInt32(uint64_t v) { return static_cast<int32_t>(static_cast<uint32_t>(v)); }

Status ParsePiece(std::string_view bytes, size_t base, const std::string& source, size_t index,
                  SentencePiece* piece) {
  WireReader reader(bytes, base, source);
  while (!reader.done()) {
    const size_t field_start = reader.offset();
    uint32_t field = 0;
    int wire_type = 0;
    RETURN_IF_ERROR(reader.ReadTag(&field, &wire_type));
    if (field == piece_field::kPiece) {
      RETURN_IF_ERROR(ReadStringField(reader, wire_type, "piece", &piece->piece));
    } else if (field == piece_field::kScore) {
      if (wire_type != kFixed32) return reader.Error("field score is not a float");
      uint32_t raw = 0;
      RETURN_IF_ERROR(reader.ReadFixed32(&raw));
      std::memcpy(&piece->score, &raw, sizeof(raw));
    } else if (field == piece_field::kType) {
      uint64_t type = 0;
      RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "type", &type));
      if (type < 1 || type > 6) {
        return reader.Error("piece " + std::to_string(index) + " has unknown type " + std::to_string(type));
      }
      piece->type = static_cast<PieceType>(type);
    } else {
      std::string ignored;
      RETURN_IF_ERROR(KeepUnknownField(reader, field_start, field, wire_type, &ignored));
    }
  }
  return OkStatus();
}

Status ParseTrainerSpec(std::string_view bytes, size_t base, const std::string& source,
                        SentencePieceTrainerSpec* spec) {
  WireReader reader(bytes, base, source);
  while (!reader.done()) {
    const size_t field_start = reader.offset();
    uint32_t field = 0;
    int wire_type = 0;
    RETURN_IF_ERROR(reader.ReadTag(&field, &wire_type));
    uint64_t v = 0;
    switch (field) {
      case trainer_field::kModelType:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "model_type", &v));
        spec->model_type = ToInt32(v);
        break;
      case trainer_field::kVocabSize:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "vocab_size", &v));
        spec->vocab_size = ToInt32(v);
        break;
      case trainer_field::kByteFallback:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "byte_fallback", &v));
        spec->byte_fallback = v != 0;
        break;
      case trainer_field::kUnkId:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "unk_id", &v));
        spec->unk_id = ToInt32(v);
        break;
      case trainer_field::kBosId:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "bos_id", &v));
        spec->bos_id = ToInt32(v);
        break;
      case trainer_field::kEosId:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "eos_id", &v));
        spec->eos_id = ToInt32(v);
        break;
      case trainer_field::kPadId:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "pad_id", &v));
        spec->pad_id = ToInt32(v);
        break;
      default:
        RETURN_IF_ERROR(KeepUnknownField(reader, field_start, field, wire_type, &spec->other_fields));
    }
  }
  return OkStatus();
}

Status ParseNormalizerSpec(std::string_view bytes, size_t base, const std::string& source,
                           SentencePieceNormalizerSpec* spec) {
  WireReader reader(bytes, base, source);
  while (!reader.done()) {
    const size_t field_start = reader.offset();
    uint32_t field = 0;
    int wire_type = 0;
    RETURN_IF_ERROR(reader.ReadTag(&field, &wire_type));
    uint64_t v = 0;
    switch (field) {
      case normalizer_field::kName:
        RETURN_IF_ERROR(ReadStringField(reader, wire_type, "name", &spec->name));
        break;
      case normalizer_field::kPrecompiledCharsmap:
        RETURN_IF_ERROR(
            ReadStringField(reader, wire_type, "precompiled_charsmap", &spec->precompiled_charsmap));
        break;
      case normalizer_field::kAddDummyPrefix:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "add_dummy_prefix", &v));
        spec->add_dummy_prefix = v != 0;
        break;
      case normalizer_field::kRemoveExtraWhitespaces:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "remove_extra_whitespaces", &v));
        spec->remove_extra_whitespaces = v != 0;
        break;
      case normalizer_field::kEscapeWhitespaces:
        RETURN_IF_ERROR(ReadVarintField(reader, wire_type, "escape_whitespaces", &v));
        spec->escape_whitespaces = v != 0;
        break;
      default:
        RETURN_IF_ERROR(KeepUnknownField(reader, field_start, field, wire_type, &spec->other_fields));
    }
  }
  return OkStatus();
}

// --- writing

void PutVarint(uint64_t v, std::string* out) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}

void PutTag(uint32_t field, int wire_type, std::string* out) {
  PutVarint((static_cast<uint64_t>(field) << 3) | static_cast<uint64_t>(wire_type), out);
}

// int32 values go out sign-extended to 64 bits, as protobuf writes them (-1 takes ten bytes).
void PutInt32Field(uint32_t field, int32_t v, std::string* out) {
  PutTag(field, kVarint, out);
  PutVarint(static_cast<uint64_t>(static_cast<int64_t>(v)), out);
}

void PutBoolField(uint32_t field, bool v, std::string* out) {
  PutTag(field, kVarint, out);
  PutVarint(v ? 1 : 0, out);
}

void PutBytesField(uint32_t field, std::string_view bytes, std::string* out) {
  PutTag(field, kLengthDelimited, out);
  PutVarint(bytes.size(), out);
  out->append(bytes.data(), bytes.size());
}

void PutFloatField(uint32_t field, float v, std::string* out) {
  PutTag(field, kFixed32, out);
  uint32_t raw = 0;
  std::memcpy(&raw, &v, sizeof(raw));
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>((raw >> (8 * i)) & 0xff));
}

std::string SerializePiece(const SentencePiece& piece) {
  std::string out;
  PutBytesField(piece_field::kPiece, piece.piece, &out);
  PutFloatField(piece_field::kScore, piece.score, &out);
  PutInt32Field(piece_field::kType, static_cast<int32_t>(piece.type), &out);
  return out;
}

std::string SerializeTrainerSpec(const SentencePieceTrainerSpec& spec) {
  std::string out;
  PutInt32Field(trainer_field::kModelType, spec.model_type, &out);
  PutInt32Field(trainer_field::kVocabSize, spec.vocab_size, &out);
  PutBoolField(trainer_field::kByteFallback, spec.byte_fallback, &out);
  PutInt32Field(trainer_field::kUnkId, spec.unk_id, &out);
  PutInt32Field(trainer_field::kBosId, spec.bos_id, &out);
  PutInt32Field(trainer_field::kEosId, spec.eos_id, &out);
  PutInt32Field(trainer_field::kPadId, spec.pad_id, &out);
  out += spec.other_fields;
  return out;
}

std::string SerializeNormalizerSpec(const SentencePieceNormalizerSpec& spec) {
  std::string out;
  if (!spec.name.empty()) PutBytesField(normalizer_field::kName, spec.name, &out);
  if (!spec.precompiled_charsmap.empty()) {
    PutBytesField(normalizer_field::kPrecompiledCharsmap, spec.precompiled_charsmap, &out);
  }
  PutBoolField(normalizer_field::kAddDummyPrefix, spec.add_dummy_prefix, &out);
  PutBoolField(normalizer_field::kRemoveExtraWhitespaces, spec.remove_extra_whitespaces, &out);
  PutBoolField(normalizer_field::kEscapeWhitespaces, spec.escape_whitespaces, &out);
  out += spec.other_fields;
  return out;
}

}  // namespace

StatusOr<SentencePieceModel> ParseSentencePieceModel(std::string_view bytes, const std::string& source) {
  SentencePieceModel model;
  WireReader reader(bytes, 0, source);
  while (!reader.done()) {
    const size_t field_start = reader.offset();
    uint32_t field = 0;
    int wire_type = 0;
    RETURN_IF_ERROR(reader.ReadTag(&field, &wire_type));
    const bool is_message = field == model_field::kPieces || field == model_field::kTrainerSpec ||
                            field == model_field::kNormalizerSpec;
    if (!is_message) {
      RETURN_IF_ERROR(KeepUnknownField(reader, field_start, field, wire_type, &model.other_fields));
      continue;
    }
    if (wire_type != kLengthDelimited) {
      return reader.Error("field " + std::to_string(field) + " is not a message");
    }
    std::string_view payload;
    size_t payload_offset = 0;
    RETURN_IF_ERROR(reader.ReadLengthDelimited(&payload, &payload_offset));
    // A repeated singular message merges into the earlier one, as protobuf parsers do.
    if (field == model_field::kPieces) {
      SentencePiece piece;
      RETURN_IF_ERROR(ParsePiece(payload, payload_offset, source, model.pieces.size(), &piece));
      model.pieces.push_back(std::move(piece));
    } else if (field == model_field::kTrainerSpec) {
      RETURN_IF_ERROR(ParseTrainerSpec(payload, payload_offset, source, &model.trainer_spec));
    } else {
      RETURN_IF_ERROR(ParseNormalizerSpec(payload, payload_offset, source, &model.normalizer_spec));
    }
  }
  if (model.pieces.empty()) return DataLossError(source + ": SentencePiece model has no pieces");
  return model;
}

StatusOr<SentencePieceModel> ReadSentencePieceModelFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open SentencePiece model");
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return DataLossError(path + ": read error");
  return ParseSentencePieceModel(contents.str(), path);
}

std::string SerializeSentencePieceModel(const SentencePieceModel& model) {
  std::string out;
  for (const SentencePiece& piece : model.pieces) {
    PutBytesField(model_field::kPieces, SerializePiece(piece), &out);
  }
  PutBytesField(model_field::kTrainerSpec, SerializeTrainerSpec(model.trainer_spec), &out);
  PutBytesField(model_field::kNormalizerSpec, SerializeNormalizerSpec(model.normalizer_spec), &out);
  out += model.other_fields;
  return out;
}

Status WriteSentencePieceModelFile(const SentencePieceModel& model, const std::string& path) {
  const std::string bytes = SerializeSentencePieceModel(model);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return UnavailableError(path + ": cannot open for writing");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return DataLossError(path + ": write failed");
  return OkStatus();
}

SentencePieceModel LlamaStyleSentencePieceModel() {
  SentencePieceModel model;
  model.trainer_spec.model_type = SentencePieceTrainerSpec::kBpe;
  model.trainer_spec.byte_fallback = true;
  model.trainer_spec.unk_id = 0;
  model.trainer_spec.bos_id = 1;
  model.trainer_spec.eos_id = 2;
  model.trainer_spec.pad_id = -1;
  model.normalizer_spec.name = "identity";
  model.normalizer_spec.add_dummy_prefix = true;
  model.normalizer_spec.remove_extra_whitespaces = false;
  model.normalizer_spec.escape_whitespaces = true;
  return model;
}

}  // namespace dtm
