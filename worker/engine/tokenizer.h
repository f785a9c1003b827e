// The Llama tokenizer: BPE with byte fallback, read from SentencePiece's `tokenizer.model` or from
// Hugging Face's `tokenizer.json`, giving the ids that the reference implementations give.
//
// Two merge rules, because the two file formats define BPE differently:
//   - tokenizer.model (SentencePiece): repeatedly merge the adjacent pair whose concatenation is a
//     vocabulary piece with the highest score; ties go to the leftmost pair.
//   - tokenizer.json (HF tokenizers): repeatedly apply the listed merge with the lowest rank; ties go
//     to the leftmost pair.
// Both are implemented as the reference implementations do them (a priority queue over adjacent
// symbols), including which queue entries count as stale, so that the ids agree and long inputs cost
// O(n log n). Text is cut where no piece that BPE can form could span the cut (joined_chars_) and
// each chunk's ids are cached for the duration of one Encode call.
//
// Deliberate differences from the reference tools, each for a reason:
//   - Invalid UTF-8 input becomes one byte piece per invalid byte. SentencePiece would first replace
//     each such byte with U+FFFD (three byte pieces); HF cannot take such text at all.
//   - Special tokens written in the text ("<s>") are encoded as plain text; HF would emit the
//     special token. Corpus text should not be able to inject control tokens into a probe.
//   - Decode never returns invalid UTF-8: byte pieces that do not form a character decode to U+FFFD
//     each, as SentencePiece does, so decoded text is always safe to put in JSON.
//
// A Tokenizer is immutable after construction, so all methods are safe to call from many threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "worker/engine/sentencepiece_model.h"
#include "common/status.h"

namespace dtm {

struct HfTokenizerJson;

class Tokenizer {
 public:
  static StatusOr<std::unique_ptr<Tokenizer>> FromSentencePieceFile(const std::string& path);
  // `source` names the model in error messages.
  static StatusOr<std::unique_ptr<Tokenizer>> FromSentencePieceModel(const SentencePieceModel& model,
                                                                     const std::string& source);
  // Reads bos/eos from a tokenizer_config.json beside the file when there is one, else uses the
  // pieces "<s>" and "</s>".
  static StatusOr<std::unique_ptr<Tokenizer>> FromHfJsonFile(const std::string& path);
  // `config_json` is the content of tokenizer_config.json, or empty.
  static StatusOr<std::unique_ptr<Tokenizer>> FromHfJson(std::string_view json, std::string_view config_json,
                                                         const std::string& source);
  // tokenizer.json when present, else tokenizer.model.
  static StatusOr<std::unique_ptr<Tokenizer>> FromModelDir(const std::string& dir);

  // Llama behaviour: "▁" prepended, spaces become "▁", BPE, byte pieces <0xXX> for characters that
  // are not in the vocabulary.
  std::vector<int32_t> Encode(std::string_view text, bool add_bos) const;
  // The inverse: byte pieces reassembled, "▁" -> " ", the dummy leading space removed, control tokens
  // skipped, ids out of range skipped, <unk> shown as " ⁇ " (SentencePiece's unk surface).
  std::string Decode(const std::vector<int32_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(pieces_.size()); }
  int32_t bos_id() const { return bos_id_; }
  int32_t eos_id() const { return eos_id_; }
  int32_t unk_id() const { return unk_id_; }
  // The piece of `id`, or an empty string when `id` is out of range.
  const std::string& piece(int32_t id) const;
  PieceType piece_type(int32_t id) const;
  // The id of `piece`, or -1.
  int32_t PieceToId(std::string_view piece) const;

 private:
  enum class MergeRule { kPieceScore, kMergeRank };

  // One step of turning text into the string that BPE sees.
  struct TextOp {
    enum Kind { kPrepend, kPrependUnlessPresent, kReplace } kind;
    std::string a;  // the prefix, or the pattern to replace
    std::string b;  // the replacement
  };

  Tokenizer() = default;

  // What FromHfJson and FromHfJsonFile share once the JSON is read.
  static StatusOr<std::unique_ptr<Tokenizer>> FromHfTokenizerJson(const HfTokenizerJson& hf,
                                                                  const std::string& source);

  // Builds the lookup tables after pieces_, types_ and the text rules are set.
  Status Finish(const std::string& source);
  // Resolves tokenizer.json's merges, (left, right) pieces in rank order, to ids once the vocabulary
  // tables are built, and marks the character pairs that the merges join.
  Status AddHfMerges(const std::vector<std::pair<std::string, std::string>>& merges,
                     const std::string& source);
  void AddJoinedChars(std::string_view piece);
  std::string Normalize(std::string_view text) const;
  // Appends the ids of one pre-tokenized word (HF) or of the whole normalized text (SentencePiece).
  void EncodeWord(std::string_view word, std::unordered_map<std::string_view, std::vector<int32_t>>* cache,
                  std::vector<int32_t>* ids) const;
  void EncodeChunk(std::string_view chunk, std::vector<int32_t>* ids) const;
  void EncodeChunkByScore(std::string_view chunk, std::vector<int32_t>* ids) const;
  void EncodeChunkByRank(std::string_view chunk, std::vector<int32_t>* ids) const;
  // SentencePiece's handling of one final symbol: its id, the pieces an unused piece was merged
  // from (`rev_merge`), or its bytes.
  using RevMerge = std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>;
  void EmitPieceByScore(std::string_view piece, const RevMerge& rev_merge, std::vector<int32_t>* ids) const;
  // The id of `piece` in the model's vocabulary (added tokens excluded), or -1.
  int32_t VocabId(std::string_view piece) const;
  // Appends the byte pieces of `bytes`, or <unk> when a byte piece is missing.
  void EmitBytes(std::string_view bytes, std::vector<int32_t>* ids) const;
  bool MayCutBetween(uint32_t left_char, uint32_t right_char) const;

  // Vocabulary.
  std::vector<std::string> pieces_;
  std::vector<PieceType> types_;
  std::vector<float> scores_;
  std::unordered_map<std::string_view, int32_t> mergeable_ids_;  // normal, user-defined, unused
  std::unordered_map<std::string_view, int32_t> other_ids_;      // control, unknown, byte
  std::unordered_map<std::string_view, int32_t> added_ids_;      // HF added tokens outside the vocab
  std::array<int32_t, 256> byte_ids_{};
  int32_t unk_id_ = -1;
  int32_t bos_id_ = -1;
  int32_t eos_id_ = -1;

  // Text handling.
  MergeRule rule_ = MergeRule::kPieceScore;
  std::vector<TextOp> text_ops_;
  bool remove_extra_whitespaces_ = false;
  bool split_on_space_symbol_ = false;  // HF Metaspace with split
  bool strip_leading_space_on_decode_ = false;
  std::string space_symbol_ = "\xE2\x96\x81";  // "▁"
  bool byte_fallback_ = false;
  bool fuse_unk_ = true;
  bool ignore_merges_ = false;
  std::vector<std::string> user_defined_;  // SentencePiece pieces matched whole before BPE

  // HF merges: (left id, right id) -> (rank, merged id).
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  // Adjacent character pairs that occur inside some piece that BPE can produce: text is never cut
  // between them. cuts_disabled_ is set when the vocabulary defeats that analysis (HF merges of byte or
  // special pieces); the text is then encoded uncut.
  std::unordered_set<uint64_t> joined_chars_;
  bool cuts_disabled_ = false;
};

}  // namespace dtm
