// SentencePiece tokenizer.model: the hand-written protobuf reader, a write/read round trip, and the
// tokenizer built from what it read (ReadSentencePieceModelFile only adds reading the file).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "tokenizer_checks.h"
#include "worker/engine/sentencepiece_model.h"
#include "worker/engine/tokenizer.h"

namespace {

bool SamePieces(const dtm::SentencePieceModel& a, const dtm::SentencePieceModel& b) {
  if (a.pieces.size() != b.pieces.size()) return false;
  for (size_t i = 0; i < a.pieces.size(); ++i) {
    // Scores are compared bit for bit: a NaN score must come back as the same NaN.
    if (a.pieces[i].piece != b.pieces[i].piece || a.pieces[i].type != b.pieces[i].type ||
        std::memcmp(&a.pieces[i].score, &b.pieces[i].score, sizeof(float)) != 0) {
      return false;
    }
  }
  return true;
}

bool SameModel(const dtm::SentencePieceModel& a, const dtm::SentencePieceModel& b) {
  const dtm::SentencePieceTrainerSpec& at = a.trainer_spec;
  const dtm::SentencePieceTrainerSpec& bt = b.trainer_spec;
  const dtm::SentencePieceNormalizerSpec& an = a.normalizer_spec;
  const dtm::SentencePieceNormalizerSpec& bn = b.normalizer_spec;
  return SamePieces(a, b) && at.model_type == bt.model_type && at.vocab_size == bt.vocab_size &&
         at.byte_fallback == bt.byte_fallback && at.unk_id == bt.unk_id && at.bos_id == bt.bos_id &&
         at.eos_id == bt.eos_id && at.pad_id == bt.pad_id && at.other_fields == bt.other_fields &&
         an.name == bn.name && an.precompiled_charsmap == bn.precompiled_charsmap &&
         an.add_dummy_prefix == bn.add_dummy_prefix && an.remove_extra_whitespaces == bn.remove_extra_whitespaces &&
         an.escape_whitespaces == bn.escape_whitespaces && an.other_fields == bn.other_fields &&
         a.other_fields == b.other_fields;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  dtm::StatusOr<dtm::SentencePieceModel> model = dtm::ParseSentencePieceModel(bytes, "tokenizer.model");
  if (!model.ok()) return 0;
  // What dtm writes (the tiny model, `dtmctl apply`) must read back as the same model.
  dtm::StatusOr<dtm::SentencePieceModel> again =
      dtm::ParseSentencePieceModel(dtm::SerializeSentencePieceModel(*model), "round trip");
  if (!again.ok() || !SameModel(*model, *again)) std::abort();

  dtm::StatusOr<std::unique_ptr<dtm::Tokenizer>> tokenizer =
      dtm::Tokenizer::FromSentencePieceModel(*model, "tokenizer.model");
  if (!tokenizer.ok()) return 0;
  dtm::fuzz::CheckTokenizer(**tokenizer, bytes.substr(0, 64));
  return 0;
}
