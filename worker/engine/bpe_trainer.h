// Trains a Llama-style BPE tokenizer from text and writes it as SentencePiece's tokenizer.model and as
// HF's tokenizer.json, which encode every text to the same ids (both are read by Tokenizer).
//
// Vocabulary layout, as Llama-2's: <unk>=0, <s>=1, </s>=2, the 256 byte pieces <0x00>..<0xFF>, the
// single characters kept (most frequent first, ties by code point), then the merged pieces in merge
// order. Normal pieces score -(their index among normal pieces), so that a piece merged earlier wins.
//
// Training, deterministic (the same texts give the same bytes in both files):
//   1. Normalize each text Llama's way: "▁" in front, every space becomes "▁".
//   2. Cut it into words: each "▁" starts a new word; each digit, and each whitespace character other
//      than the space, is a word of its own (Llama's split_digits). Merges never cross words.
//   3. Keep the characters that cover `character_coverage` of all characters (most frequent first);
//      rarer ones are left to byte fallback and split the words they occur in.
//   4. Count adjacent symbol pairs over the distinct words, weighted by word frequency, and repeatedly
//      merge the most frequent pair (ties: the pair of lower ids), updating only the counts of the
//      words that hold the merged pair, until the vocabulary is full or no pair occurs twice.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "worker/engine/sentencepiece_model.h"
#include "common/status.h"

namespace dtm {

struct BpeTrainerOptions {
  int vocab_size = 4096;
  // No piece is longer than this many characters.
  int max_piece_chars = 16;
  // The fraction of character occurrences that single-character pieces must cover.
  double character_coverage = 0.9995;
};

class BpeModel {
 public:
  static BpeModel Train(const std::vector<std::string>& texts, const BpeTrainerOptions& options);

  Status WriteSentencePieceModel(const std::string& path) const;
  Status WriteHfTokenizerJson(const std::string& path) const;
  SentencePieceModel ToSentencePieceModel() const;
  // The content of tokenizer.json.
  std::string ToHfTokenizerJson() const;

  const std::vector<SentencePiece>& pieces() const { return pieces_; }
  int vocab_size() const { return static_cast<int>(pieces_.size()); }
  // The merges in the order they were learned, as (left piece, right piece).
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }
  // The id of the first single-character piece (after the special and byte pieces).
  static constexpr int kFirstNormalId = 3 + 256;

 private:
  std::vector<SentencePiece> pieces_;
  std::vector<std::pair<std::string, std::string>> merges_;
};

}  // namespace dtm
