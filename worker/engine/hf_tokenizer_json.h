// Hugging Face `tokenizer.json` files (with their `tokenizer_config.json`), read into a plain struct
// so that Tokenizer builds from it as it builds from a SentencePieceModel, and so that no header
// needs a JSON library.
//
// Only the shapes that Llama-family files use are accepted: a plain BPE model, Prepend / Replace /
// Sequence normalizers, a Metaspace pre-tokenizer. Anything else is refused by name rather than
// ignored, because ignoring it would give ids that differ from the reference implementation's.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "worker/engine/sentencepiece_model.h"
#include "common/status.h"

namespace dtm {

struct HfTokenizerJson {
  // One normalizer step: prepend `text`, or replace `text` with `replacement`.
  struct NormalizerStep {
    bool prepend = false;
    std::string text;
    std::string replacement;
  };

  // model.vocab and added_tokens, indexed by id. Ids that neither names are gaps: an empty piece of
  // type kUnused. Added tokens that repeat a vocabulary entry keep its id and give it their type
  // (kControl when special, else kUserDefined); model.unk_token's piece is kUnknown.
  std::vector<std::string> pieces;
  std::vector<PieceType> types;
  // Whether each id is in model.vocab, and so a BPE symbol, rather than only an added token.
  std::vector<char> in_model_vocab;
  // model.merges in rank order, as (left, right) pieces; not yet checked against the vocabulary.
  std::vector<std::pair<std::string, std::string>> merges;

  // BPE options of the model section.
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;

  std::vector<NormalizerStep> normalizer_steps;  // flattened out of any Sequence
  // The Metaspace pre-tokenizer, when there is one.
  bool has_metaspace = false;
  std::string metaspace_replacement = "\xE2\x96\x81";  // "▁"
  bool metaspace_prepend = true;
  bool metaspace_split = true;
  // Whether the decoder removes the space that encoding put in front (Strip, or a prefixing Metaspace).
  bool decoder_strips_leading_space = false;

  // From tokenizer_config.json; Llama's pieces when it names none.
  std::string bos_token = "<s>";
  std::string eos_token = "</s>";
};

// Parses tokenizer.json and, when `config_json` is not empty, tokenizer_config.json. `source` (the
// file name) prefixes every error message; malformed or mistyped JSON is an InvalidArgument error.
StatusOr<HfTokenizerJson> ParseHfTokenizerJson(std::string_view json, std::string_view config_json,
                                               const std::string& source);

// Reads the file at `path` and, when there is one beside it, tokenizer_config.json.
StatusOr<HfTokenizerJson> ReadHfTokenizerJsonFile(const std::string& path);

// "<0x41>" -> 0x41, or -1 when `piece` is not a byte piece. Declared here because a tokenizer.json
// marks byte pieces only by this form, and Tokenizer needs the same reading to decode them.
int ParseBytePiece(std::string_view piece);

}  // namespace dtm
