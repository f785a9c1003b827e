#include "worker/engine/tokenizer.h"

#include <algorithm>
#include <filesystem>

#include "worker/engine/hf_tokenizer_json.h"

namespace dtm {
namespace {

constexpr std::string_view kUnkSurface = " \xE2\x81\x87 ";     // " ⁇ ", SentencePiece's default
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

// Invalid UTF-8 bytes are decoded as one "character" each, numbered past the end of Unicode so that
// no vocabulary piece can contain them.
constexpr uint32_t kInvalidByteBase = 0x110000;

struct Utf8Char {
  uint32_t code;
  size_t length;
};

Utf8Char DecodeUtf8(std::string_view s, size_t pos) {
  const uint8_t b0 = static_cast<uint8_t>(s[pos]);
  const Utf8Char invalid{kInvalidByteBase + b0, 1};
  if (b0 < 0x80) return {b0, 1};
  size_t length = 0;
  uint32_t code = 0;
  uint32_t min_code = 0;
  if ((b0 & 0xE0) == 0xC0) {
    length = 2, code = b0 & 0x1F, min_code = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    length = 3, code = b0 & 0x0F, min_code = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    length = 4, code = b0 & 0x07, min_code = 0x10000;
  } else {
    return invalid;
  }
  if (pos + length > s.size()) return invalid;
  for (size_t i = 1; i < length; ++i) {
    const uint8_t b = static_cast<uint8_t>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return invalid;
    code = (code << 6) | (b & 0x3F);
  }
  // Overlong forms, surrogates and values past U+10FFFF are invalid, as both reference tools hold.
  if (code < min_code || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return invalid;
  return {code, length};
}

uint64_t CharPairKey(uint32_t left, uint32_t right) { return (static_cast<uint64_t>(left) << 32) | right; }

uint64_t IdPairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

void ReplaceAll(std::string* s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  out.reserve(s->size() + s->size() / 4);
  size_t pos = 0;
  while (true) {
    const size_t hit = s->find(from, pos);
    if (hit == std::string::npos) break;
    out.append(*s, pos, hit - pos);
    out.append(to.data(), to.size());
    pos = hit + from.size();
  }
  out.append(*s, pos, std::string::npos);
  *s = std::move(out);
}

// SentencePiece's remove_extra_whitespaces: no leading or trailing spaces, runs of spaces made one.
std::string RemoveExtraSpaces(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (char c : text) {
    if (c == ' ') {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(c);
  }
  return out;
}

bool IsValidUtf8(std::string_view s) {
  for (size_t pos = 0; pos < s.size();) {
    const Utf8Char c = DecodeUtf8(s, pos);
    if (c.code >= kInvalidByteBase) return false;
    pos += c.length;
  }
  return true;
}

// Appends decoded bytes; what is not valid UTF-8 becomes U+FFFD per byte, as SentencePiece does.
void AppendBytesAsText(std::string_view bytes, std::string* out) {
  for (size_t pos = 0; pos < bytes.size();) {
    const Utf8Char c = DecodeUtf8(bytes, pos);
    if (c.code >= kInvalidByteBase) {
      out->append(kReplacementChar);
    } else {
      out->append(bytes.substr(pos, c.length));
    }
    pos += c.length;
  }
}

}  // namespace

// --- loading

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSentencePieceFile(const std::string& path) {
  ASSIGN_OR_RETURN(SentencePieceModel model, ReadSentencePieceModelFile(path));
  return FromSentencePieceModel(model, path);
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromSentencePieceModel(const SentencePieceModel& model,
                                                                       const std::string& source) {
  const SentencePieceTrainerSpec& trainer = model.trainer_spec;
  const SentencePieceNormalizerSpec& normalizer = model.normalizer_spec;
  if (trainer.model_type != SentencePieceTrainerSpec::kBpe) {
    return UnimplementedError(source +
                              ": only BPE SentencePiece models are supported, this one has model_type " +
                              std::to_string(trainer.model_type));
  }
  if (!normalizer.precompiled_charsmap.empty()) {
    return UnimplementedError(source + ": normalizer '" + normalizer.name +
                              "' uses a precompiled charsmap; only the identity normalizer is supported");
  }
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  for (const SentencePiece& p : model.pieces) {
    // Decode emits pieces as they are, and promises valid UTF-8; tokenizer.json's pieces are checked
    // by its JSON parser, tokenizer.model's strings by nothing but this.
    if (!IsValidUtf8(p.piece)) {
      return DataLossError(source + ": piece " + std::to_string(tok->pieces_.size()) + " is not valid UTF-8");
    }
    tok->pieces_.push_back(p.piece);
    tok->types_.push_back(p.type);
    tok->scores_.push_back(p.score);
  }
  tok->rule_ = MergeRule::kPieceScore;
  tok->byte_fallback_ = trainer.byte_fallback;
  tok->remove_extra_whitespaces_ = normalizer.remove_extra_whitespaces;
  // SentencePiece's dummy prefix is the space symbol when it escapes spaces, a plain space otherwise.
  if (normalizer.escape_whitespaces) {
    tok->text_ops_.push_back({TextOp::kReplace, " ", std::string(kSpaceSymbol)});
    tok->space_symbol_ = std::string(kSpaceSymbol);
  } else {
    tok->space_symbol_.clear();
  }
  if (normalizer.add_dummy_prefix) {
    tok->text_ops_.push_back(
        {TextOp::kPrepend, normalizer.escape_whitespaces ? std::string(kSpaceSymbol) : " ", ""});
  }
  tok->strip_leading_space_on_decode_ = normalizer.add_dummy_prefix;
  RETURN_IF_ERROR(tok->Finish(source));

  // SentencePiece's own consistency rules (model_interface.cc), so that a file it would refuse is refused.
  int byte_pieces = 0;
  for (size_t id = 0; id < tok->pieces_.size(); ++id) {
    if (tok->types_[id] == PieceType::kByte) {
      if (!trainer.byte_fallback) {
        return DataLossError(source + ": byte piece " + tok->pieces_[id] +
                             " found although byte_fallback is off");
      }
      ++byte_pieces;
    }
  }
  if (trainer.byte_fallback && byte_pieces != 256) {
    return DataLossError(source + ": byte_fallback is on but the model has " + std::to_string(byte_pieces) +
                         " of the 256 byte pieces");
  }
  const auto valid_id = [&](int32_t id) { return id >= 0 && id < static_cast<int32_t>(tok->pieces_.size()); };
  tok->bos_id_ = valid_id(trainer.bos_id) ? trainer.bos_id : -1;
  tok->eos_id_ = valid_id(trainer.eos_id) ? trainer.eos_id : -1;
  return tok;
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromHfJsonFile(const std::string& path) {
  ASSIGN_OR_RETURN(const HfTokenizerJson hf, ReadHfTokenizerJsonFile(path));
  return FromHfTokenizerJson(hf, path);
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromHfJson(std::string_view json,
                                                           std::string_view config_json,
                                                           const std::string& source) {
  ASSIGN_OR_RETURN(const HfTokenizerJson hf, ParseHfTokenizerJson(json, config_json, source));
  return FromHfTokenizerJson(hf, source);
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromHfTokenizerJson(const HfTokenizerJson& hf,
                                                                    const std::string& source) {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  tok->rule_ = MergeRule::kMergeRank;
  tok->byte_fallback_ = hf.byte_fallback;
  tok->fuse_unk_ = hf.fuse_unk;
  tok->ignore_merges_ = hf.ignore_merges;
  tok->pieces_ = hf.pieces;
  tok->types_ = hf.types;
  for (const HfTokenizerJson::NormalizerStep& step : hf.normalizer_steps) {
    tok->text_ops_.push_back(
        {step.prepend ? TextOp::kPrepend : TextOp::kReplace, step.text, step.replacement});
  }
  if (hf.has_metaspace) {
    tok->text_ops_.push_back({TextOp::kReplace, " ", hf.metaspace_replacement});
    if (hf.metaspace_prepend) {
      tok->text_ops_.push_back({TextOp::kPrependUnlessPresent, hf.metaspace_replacement, ""});
    }
    tok->split_on_space_symbol_ = hf.metaspace_split;
    tok->space_symbol_ = hf.metaspace_replacement;
  }
  tok->strip_leading_space_on_decode_ = hf.decoder_strips_leading_space;
  RETURN_IF_ERROR(tok->Finish(source));
  // Added tokens outside the model's vocabulary are not BPE symbols; keep them out of its tables.
  for (size_t id = 0; id < tok->pieces_.size(); ++id) {
    if (hf.in_model_vocab[id]) continue;
    tok->mergeable_ids_.erase(tok->pieces_[id]);
    tok->other_ids_.erase(tok->pieces_[id]);
    tok->added_ids_.emplace(tok->pieces_[id], static_cast<int32_t>(id));
  }
  RETURN_IF_ERROR(tok->AddHfMerges(hf.merges, source));
  tok->bos_id_ = tok->PieceToId(hf.bos_token);
  tok->eos_id_ = tok->PieceToId(hf.eos_token);
  return tok;
}

Status Tokenizer::AddHfMerges(const std::vector<std::pair<std::string, std::string>>& merges,
                              const std::string& source) {
  // A later duplicate wins, as in HF.
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& [left, right] = merges[rank];
    const int32_t left_id = VocabId(left);
    const int32_t right_id = VocabId(right);
    const int32_t merged_id = VocabId(left + right);
    if (left_id < 0 || right_id < 0 || merged_id < 0) {
      return InvalidArgumentError(source + ": merge " + std::to_string(rank) + " ('" + left + "' '" + right +
                                  "') uses a piece that is not in the vocabulary");
    }
    merges_[IdPairKey(left_id, right_id)] = {static_cast<int32_t>(rank), merged_id};
  }
  // Every symbol beyond a single character is the result of a merge, so the character pairs inside
  // merge results are the only ones that text must not be cut between. That holds while merges join
  // text pieces; merges of byte or special pieces would defeat it, so such a vocabulary is not cut.
  for (const auto& [key, value] : merges_) {
    for (const int32_t part : {static_cast<int32_t>(key >> 32), static_cast<int32_t>(key & 0xffffffffu)}) {
      if (types_[part] != PieceType::kNormal && types_[part] != PieceType::kUserDefined) {
        cuts_disabled_ = true;
      }
    }
    AddJoinedChars(pieces_[value.second]);
  }
  return OkStatus();
}

StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromModelDir(const std::string& dir) {
  const std::filesystem::path base(dir);
  std::error_code ec;
  if (std::filesystem::exists(base / "tokenizer.json", ec)) {
    return FromHfJsonFile((base / "tokenizer.json").string());
  }
  if (std::filesystem::exists(base / "tokenizer.model", ec)) {
    return FromSentencePieceFile((base / "tokenizer.model").string());
  }
  return NotFoundError(dir + ": neither tokenizer.json nor tokenizer.model found");
}

Status Tokenizer::Finish(const std::string& source) {
  scores_.resize(pieces_.size(), 0.0f);
  byte_ids_.fill(-1);
  unk_id_ = -1;
  for (size_t i = 0; i < pieces_.size(); ++i) {
    const int32_t id = static_cast<int32_t>(i);
    const std::string& p = pieces_[i];
    const PieceType t = types_[i];
    if (p.empty()) {
      // Gaps in a tokenizer.json vocabulary are allowed; SentencePiece forbids empty pieces.
      if (rule_ == MergeRule::kPieceScore) {
        return DataLossError(source + ": piece " + std::to_string(i) + " is empty");
      }
      continue;
    }
    const bool mergeable = t == PieceType::kNormal || t == PieceType::kUserDefined || t == PieceType::kUnused;
    auto& table = mergeable ? mergeable_ids_ : other_ids_;
    if (!table.emplace(p, id).second) {
      return DataLossError(source + ": piece '" + p + "' is defined twice");
    }
    if (t == PieceType::kUnknown) {
      if (unk_id_ >= 0) return DataLossError(source + ": more than one unknown piece");
      unk_id_ = id;
    }
    if (t == PieceType::kByte) {
      const int byte = ParseBytePiece(p);
      if (byte < 0) return DataLossError(source + ": byte piece '" + p + "' is not of the form <0xXX>");
      byte_ids_[byte] = id;
    }
    if (t == PieceType::kUserDefined && rule_ == MergeRule::kPieceScore) user_defined_.push_back(p);
  }
  if (unk_id_ < 0 && rule_ == MergeRule::kPieceScore) {
    return DataLossError(source + ": no unknown piece (<unk>)");
  }
  // Longest first, so that the first match is SentencePiece's longest match.
  std::stable_sort(user_defined_.begin(), user_defined_.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  if (rule_ == MergeRule::kPieceScore) {
    // Every symbol SentencePiece forms is a mergeable piece, so only their character pairs join text.
    for (const auto& [piece, id] : mergeable_ids_) AddJoinedChars(piece);
  }
  return OkStatus();
}

// --- queries

const std::string& Tokenizer::piece(int32_t id) const {
  static const std::string kEmpty;
  if (id < 0 || id >= static_cast<int32_t>(pieces_.size())) return kEmpty;
  return pieces_[id];
}

PieceType Tokenizer::piece_type(int32_t id) const {
  if (id < 0 || id >= static_cast<int32_t>(types_.size())) return PieceType::kUnused;
  return types_[id];
}

int32_t Tokenizer::VocabId(std::string_view p) const {
  if (auto it = mergeable_ids_.find(p); it != mergeable_ids_.end()) return it->second;
  if (auto it = other_ids_.find(p); it != other_ids_.end()) return it->second;
  return -1;
}

int32_t Tokenizer::PieceToId(std::string_view p) const {
  const int32_t id = VocabId(p);
  if (id >= 0) return id;
  if (auto it = added_ids_.find(p); it != added_ids_.end()) return it->second;
  return -1;
}

void Tokenizer::AddJoinedChars(std::string_view piece) {
  Utf8Char prev = DecodeUtf8(piece, 0);
  for (size_t pos = prev.length; pos < piece.size();) {
    const Utf8Char c = DecodeUtf8(piece, pos);
    joined_chars_.insert(CharPairKey(prev.code, c.code));
    prev = c;
    pos += c.length;
  }
}

bool Tokenizer::MayCutBetween(uint32_t left_char, uint32_t right_char) const {
  return !cuts_disabled_ && joined_chars_.count(CharPairKey(left_char, right_char)) == 0;
}

// --- encoding

std::string Tokenizer::Normalize(std::string_view text) const {
  std::string s = remove_extra_whitespaces_ ? RemoveExtraSpaces(text) : std::string(text);
  for (const TextOp& op : text_ops_) {
    switch (op.kind) {
      case TextOp::kPrepend:
        if (!s.empty()) s.insert(0, op.a);
        break;
      case TextOp::kPrependUnlessPresent:
        if (!s.empty() && s.compare(0, op.a.size(), op.a) != 0) s.insert(0, op.a);
        break;
      case TextOp::kReplace:
        ReplaceAll(&s, op.a, op.b);
        break;
    }
  }
  // SentencePiece strips trailing whitespace after escaping it, so a "▁" typed at the end goes too.
  const std::string_view space =
      space_symbol_.empty() ? std::string_view(" ") : std::string_view(space_symbol_);
  while (remove_extra_whitespaces_ && s.size() >= space.size() &&
         s.compare(s.size() - space.size(), space.size(), space) == 0) {
    s.resize(s.size() - space.size());
  }
  return s;
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos && bos_id_ >= 0) ids.push_back(bos_id_);
  const std::string normalized = Normalize(text);
  ids.reserve(ids.size() + normalized.size() / 3 + 1);
  std::unordered_map<std::string_view, std::vector<int32_t>> cache;
  const std::string_view all(normalized);
  if (!split_on_space_symbol_ || space_symbol_.empty()) {
    EncodeWord(all, &cache, &ids);
    return ids;
  }
  // HF Metaspace split: every space symbol starts a new word. A search from one byte on cannot find
  // the symbol that starts the word, because its later bytes are continuation bytes.
  size_t start = 0;
  while (start < all.size()) {
    size_t next = all.find(space_symbol_, start + 1);
    if (next == std::string_view::npos) next = all.size();
    EncodeWord(all.substr(start, next - start), &cache, &ids);
    start = next;
  }
  return ids;
}

void Tokenizer::EncodeWord(std::string_view word,
                           std::unordered_map<std::string_view, std::vector<int32_t>>* cache,
                           std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_ && rule_ == MergeRule::kMergeRank) {
    if (const int32_t id = VocabId(word); id >= 0) {
      ids->push_back(id);
      return;
    }
  }
  const size_t word_begin = ids->size();
  // SentencePiece always merges runs of <unk>; HF does when fuse_unk is set.
  const bool fuse_unk = rule_ == MergeRule::kPieceScore || fuse_unk_;
  auto append_chunk = [&](std::string_view chunk) {
    auto it = cache->find(chunk);
    if (it == cache->end()) {
      std::vector<int32_t> chunk_ids;
      EncodeChunk(chunk, &chunk_ids);
      it = cache->emplace(chunk, std::move(chunk_ids)).first;
    }
    for (int32_t id : it->second) {
      if (fuse_unk && id == unk_id_ && ids->size() > word_begin && ids->back() == unk_id_) continue;
      ids->push_back(id);
    }
  };
  if (cuts_disabled_) {
    append_chunk(word);
    return;
  }
  size_t chunk_start = 0;
  Utf8Char prev = DecodeUtf8(word, 0);
  for (size_t pos = prev.length; pos < word.size();) {
    const Utf8Char c = DecodeUtf8(word, pos);
    if (MayCutBetween(prev.code, c.code)) {
      append_chunk(word.substr(chunk_start, pos - chunk_start));
      chunk_start = pos;
    }
    prev = c;
    pos += c.length;
  }
  append_chunk(word.substr(chunk_start));
}

void Tokenizer::EncodeChunk(std::string_view chunk, std::vector<int32_t>* ids) const {
  if (rule_ == MergeRule::kPieceScore) {
    EncodeChunkByScore(chunk, ids);
  } else {
    EncodeChunkByRank(chunk, ids);
  }
}

void Tokenizer::EmitBytes(std::string_view bytes, std::vector<int32_t>* ids) const {
  for (char b : bytes) {
    const int32_t id = byte_ids_[static_cast<uint8_t>(b)];
    ids->push_back(id >= 0 ? id : unk_id_);
  }
}

// SentencePiece's bpe_model.cc Encode: symbols are characters (or whole user-defined pieces, which
// never merge); the agenda holds candidate pairs whose concatenation is a piece, best score first,
// leftmost among equals. An entry is stale when either side was emptied or grew since.
void Tokenizer::EncodeChunkByScore(std::string_view chunk, std::vector<int32_t>* ids) const {
  struct Symbol {
    int prev;
    int next;
    bool freeze;
    std::string_view piece;
  };
  struct Pair {
    float score;
    int left;
    int right;
    size_t size;
  };
  const auto lower_priority = [](const Pair& a, const Pair& b) {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  };

  std::vector<Symbol> symbols;
  for (size_t pos = 0; pos < chunk.size();) {
    size_t length = 0;
    bool freeze = false;
    for (const std::string& user : user_defined_) {
      if (chunk.compare(pos, user.size(), user) == 0) {
        length = user.size();
        freeze = true;
        break;
      }
    }
    if (length == 0) length = DecodeUtf8(chunk, pos).length;
    const int index = static_cast<int>(symbols.size());
    symbols.push_back(
        {index - 1, pos + length < chunk.size() ? index + 1 : -1, freeze, chunk.substr(pos, length)});
    pos += length;
  }
  if (symbols.empty()) return;

  std::vector<Pair> agenda;
  RevMerge rev_merge;
  const auto maybe_add_pair = [&](int left, int right) {
    if (left == -1 || right == -1 || symbols[left].freeze || symbols[right].freeze) return;
    const std::string_view merged(symbols[left].piece.data(),
                                  symbols[left].piece.size() + symbols[right].piece.size());
    const auto it = mergeable_ids_.find(merged);
    if (it == mergeable_ids_.end()) return;
    agenda.push_back({scores_[it->second], left, right, merged.size()});
    std::push_heap(agenda.begin(), agenda.end(), lower_priority);
    if (types_[it->second] == PieceType::kUnused) {
      rev_merge[merged] = {symbols[left].piece, symbols[right].piece};
    }
  };
  for (size_t i = 1; i < symbols.size(); ++i) maybe_add_pair(static_cast<int>(i) - 1, static_cast<int>(i));

  while (!agenda.empty()) {
    std::pop_heap(agenda.begin(), agenda.end(), lower_priority);
    const Pair top = agenda.back();
    agenda.pop_back();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.piece.empty() || right.piece.empty() || left.piece.size() + right.piece.size() != top.size) {
      continue;
    }
    left.piece = std::string_view(left.piece.data(), top.size);
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    right.piece = std::string_view();
    maybe_add_pair(left.prev, top.left);
    maybe_add_pair(top.left, left.next);
  }
  for (int i = 0; i != -1; i = symbols[i].next) EmitPieceByScore(symbols[i].piece, rev_merge, ids);
}

void Tokenizer::EmitPieceByScore(std::string_view p, const RevMerge& rev_merge,
                                 std::vector<int32_t>* ids) const {
  int32_t id = VocabId(p);
  if (id < 0) id = unk_id_;
  if (types_[id] == PieceType::kUnused) {
    // An unused piece is split back into the pieces it was merged from.
    if (const auto it = rev_merge.find(p); it != rev_merge.end()) {
      EmitPieceByScore(it->second.first, rev_merge, ids);
      EmitPieceByScore(it->second.second, rev_merge, ids);
      return;
    }
  }
  if (types_[id] == PieceType::kUnknown && byte_fallback_) {
    EmitBytes(p, ids);
    return;
  }
  ids->push_back(id);
}

// HF tokenizers' BPE Word::merge_all: symbols are token ids; the queue holds merges by rank, then by
// position. An entry is stale when its symbol was removed, is last, or no longer forms a pair whose
// merge gives the same token.
void Tokenizer::EncodeChunkByRank(std::string_view chunk, std::vector<int32_t>* ids) const {
  struct Symbol {
    int32_t id;
    int prev;
    int next;
    size_t length;
  };
  struct Merge {
    int32_t rank;
    int pos;
    int32_t merged_id;
  };
  const auto lower_priority = [](const Merge& a, const Merge& b) {
    return a.rank > b.rank || (a.rank == b.rank && a.pos > b.pos);
  };

  std::vector<Symbol> symbols;
  const auto add_symbol = [&](int32_t id, size_t length) {
    const int index = static_cast<int>(symbols.size());
    if (index > 0) symbols.back().next = index;
    symbols.push_back({id, index - 1, -1, length});
  };
  for (size_t pos = 0; pos < chunk.size();) {
    const Utf8Char c = DecodeUtf8(chunk, pos);
    const std::string_view text = chunk.substr(pos, c.length);
    pos += c.length;
    if (c.code < kInvalidByteBase) {
      if (const int32_t id = VocabId(text); id >= 0) {
        add_symbol(id, text.size());
        continue;
      }
    }
    if (byte_fallback_ && std::all_of(text.begin(), text.end(),
                                      [&](char b) { return byte_ids_[static_cast<uint8_t>(b)] >= 0; })) {
      for (char b : text) add_symbol(byte_ids_[static_cast<uint8_t>(b)], 1);
      continue;
    }
    if (unk_id_ < 0) continue;  // HF would fail; dropping the character is the lesser harm
    if (fuse_unk_ && !symbols.empty() && symbols.back().id == unk_id_) {
      symbols.back().length += text.size();
    } else {
      add_symbol(unk_id_, text.size());
    }
  }
  if (symbols.empty()) return;

  const auto find_merge = [&](int32_t left, int32_t right) -> const std::pair<int32_t, int32_t>* {
    const auto it = merges_.find(IdPairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::vector<Merge> queue;
  const auto push = [&](int pos, const std::pair<int32_t, int32_t>& merge) {
    queue.push_back({merge.first, pos, merge.second});
    std::push_heap(queue.begin(), queue.end(), lower_priority);
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const auto* m = find_merge(symbols[i].id, symbols[i + 1].id)) push(static_cast<int>(i), *m);
  }
  while (!queue.empty()) {
    std::pop_heap(queue.begin(), queue.end(), lower_priority);
    const Merge top = queue.back();
    queue.pop_back();
    Symbol& current = symbols[top.pos];
    if (current.length == 0 || current.next == -1) continue;
    const int next_pos = current.next;
    const Symbol right = symbols[next_pos];
    const auto* still = find_merge(current.id, right.id);
    if (still == nullptr || still->second != top.merged_id) continue;
    current.id = top.merged_id;
    current.length += right.length;
    current.next = right.next;
    symbols[next_pos].length = 0;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    if (current.prev >= 0) {
      if (const auto* m = find_merge(symbols[current.prev].id, current.id)) push(current.prev, *m);
    }
    if (current.next >= 0) {
      if (const auto* m = find_merge(current.id, symbols[current.next].id)) push(top.pos, *m);
    }
  }
  for (int i = 0; i != -1; i = symbols[i].next) ids->push_back(symbols[i].id);
}

// --- decoding

std::string Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::string text;
  std::string pending_bytes;
  const auto flush_bytes = [&] {
    AppendBytesAsText(pending_bytes, &text);
    pending_bytes.clear();
  };
  // SentencePiece removes the dummy prefix once: from the first piece with visible output, if that
  // piece starts with the space symbol.
  bool at_start = strip_leading_space_on_decode_;
  for (int32_t id : ids) {
    if (id < 0 || id >= static_cast<int32_t>(pieces_.size())) continue;
    const PieceType t = types_[id];
    if (t == PieceType::kByte) {
      pending_bytes.push_back(static_cast<char>(ParseBytePiece(pieces_[id])));
      at_start = false;
      continue;
    }
    flush_bytes();
    if (t == PieceType::kControl) continue;
    if (t == PieceType::kUnknown) {
      text.append(kUnkSurface);
      at_start = false;
      continue;
    }
    std::string_view p = pieces_[id];
    const std::string_view prefix =
        space_symbol_.empty() ? std::string_view(" ") : std::string_view(space_symbol_);
    const bool consumed = at_start && p.compare(0, prefix.size(), prefix) == 0;
    if (consumed) p.remove_prefix(prefix.size());
    if (consumed || !p.empty()) at_start = false;
    std::string piece_text(p);
    if (!space_symbol_.empty()) ReplaceAll(&piece_text, space_symbol_, " ");
    text += piece_text;
  }
  flush_bytes();
  return text;
}

}  // namespace dtm
