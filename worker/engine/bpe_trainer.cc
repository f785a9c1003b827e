#include "worker/engine/bpe_trainer.h"

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>
#include <unordered_set>

namespace dtm {
namespace {

constexpr uint32_t kNotAChar = 0xFFFFFFFFu;

// Decodes the character at `pos`; an invalid sequence yields kNotAChar and one byte.
uint32_t NextChar(std::string_view s, size_t pos, size_t* length) {
  const uint8_t b0 = static_cast<uint8_t>(s[pos]);
  *length = 1;
  if (b0 < 0x80) return b0;
  size_t n = 0;
  uint32_t code = 0, min_code = 0;
  if ((b0 & 0xE0) == 0xC0) {
    n = 2, code = b0 & 0x1F, min_code = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    n = 3, code = b0 & 0x0F, min_code = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    n = 4, code = b0 & 0x07, min_code = 0x10000;
  } else {
    return kNotAChar;
  }
  if (pos + n > s.size()) return kNotAChar;
  for (size_t i = 1; i < n; ++i) {
    const uint8_t b = static_cast<uint8_t>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return kNotAChar;
    code = (code << 6) | (b & 0x3F);
  }
  if (code < min_code || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return kNotAChar;
  *length = n;
  return code;
}

void AppendUtf8(uint32_t code, std::string* out) {
  if (code < 0x80) {
    out->push_back(static_cast<char>(code));
  } else if (code < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code >> 6)));
    out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else if (code < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code & 0x3F)));
  }
}

// Characters that stand alone as words: digits (Llama's split_digits) and whitespace other than the
// space, which Llama leaves to byte pieces and which should not glue onto words either.
bool IsSolitary(uint32_t code) {
  return (code >= '0' && code <= '9') || code == '\t' || code == '\n' || code == '\v' || code == '\f' ||
         code == '\r';
}

// Step 1 and 2 of the header's list: counts the words of one text.
void CountWords(std::string_view text, std::unordered_map<std::string, int64_t>* counts) {
  if (text.empty()) return;
  std::string normalized(kSpaceSymbol);
  normalized.reserve(text.size() + text.size() / 2);
  for (char c : text) {
    if (c == ' ') {
      normalized.append(kSpaceSymbol);
    } else {
      normalized.push_back(c);
    }
  }
  const std::string_view s(normalized);
  size_t word_start = 0;
  bool previous_solitary = false;
  for (size_t pos = 0; pos < s.size();) {
    size_t length = 0;
    const uint32_t code = NextChar(s, pos, &length);
    const bool solitary = IsSolitary(code);
    const bool starts_word =
        s.compare(pos, kSpaceSymbol.size(), kSpaceSymbol) == 0 || solitary || previous_solitary;
    if (starts_word && pos > word_start) {
      ++(*counts)[std::string(s.substr(word_start, pos - word_start))];
      word_start = pos;
    }
    previous_solitary = solitary;
    pos += length;
  }
  if (word_start < s.size()) ++(*counts)[std::string(s.substr(word_start))];
}

struct Word {
  std::vector<int32_t> symbols;
  int64_t count;
};

uint64_t PairKey(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
int32_t PairLeft(uint64_t key) { return static_cast<int32_t>(key >> 32); }
int32_t PairRight(uint64_t key) { return static_cast<int32_t>(key & 0xffffffffu); }

// The pairs of a symbol sequence, sorted, for diffing before and after a merge.
std::vector<uint64_t> SortedPairs(const std::vector<int32_t>& symbols) {
  std::vector<uint64_t> pairs;
  for (size_t i = 0; i + 1 < symbols.size(); ++i) pairs.push_back(PairKey(symbols[i], symbols[i + 1]));
  std::sort(pairs.begin(), pairs.end());
  return pairs;
}

// Incremental pair counts (step 4): the count of every pair, the words that may hold it (a superset,
// checked when used), and a max-heap with lazy deletion: an entry is current only if its count is.
class PairCounts {
 public:
  void Add(uint64_t pair, int64_t delta, int32_t word) {
    if (banned_.count(pair)) return;
    int64_t& count = counts_[pair];
    count += delta;
    if (delta > 0) {
      heap_.push({count, pair});
      std::vector<int32_t>& holders = words_[pair];
      if (holders.empty() || holders.back() != word) holders.push_back(word);
    }
  }

  // The most frequent pair (ties: lowest key, i.e. lower ids) and its count; false when none is left.
  bool Best(uint64_t* pair, int64_t* count) {
    while (!heap_.empty()) {
      const Entry top = heap_.top();
      heap_.pop();
      const auto it = counts_.find(top.pair);
      const int64_t current = it == counts_.end() ? 0 : it->second;
      if (current == top.count && current > 0) {
        *pair = top.pair;
        *count = current;
        return true;
      }
      // Increases push a fresh entry; a decrease is noticed here and re-queued at its new count.
      if (current > 0 && current < top.count) heap_.push({current, top.pair});
    }
    return false;
  }

  // Takes the words list of `pair`, which is about to disappear.
  std::vector<int32_t> TakeWords(uint64_t pair) {
    std::vector<int32_t> holders = std::move(words_[pair]);
    words_.erase(pair);
    return holders;
  }

  // Never offers `pair` again (its piece would be too long).
  void Ban(uint64_t pair) {
    banned_.insert(pair);
    counts_.erase(pair);
    words_.erase(pair);
  }

 private:
  struct Entry {
    int64_t count;
    uint64_t pair;
    bool operator<(const Entry& other) const {
      return count < other.count || (count == other.count && pair > other.pair);
    }
  };
  std::unordered_map<uint64_t, int64_t> counts_;
  std::unordered_map<uint64_t, std::vector<int32_t>> words_;
  std::priority_queue<Entry> heap_;
  std::unordered_set<uint64_t> banned_;
};

// Replaces every non-overlapping (left, right), leftmost first, with `merged`; returns whether any was.
bool MergeInWord(std::vector<int32_t>* symbols, int32_t left, int32_t right, int32_t merged) {
  std::vector<int32_t> out;
  out.reserve(symbols->size());
  bool changed = false;
  for (size_t i = 0; i < symbols->size(); ++i) {
    if (i + 1 < symbols->size() && (*symbols)[i] == left && (*symbols)[i + 1] == right) {
      out.push_back(merged);
      ++i;
      changed = true;
    } else {
      out.push_back((*symbols)[i]);
    }
  }
  if (changed) *symbols = std::move(out);
  return changed;
}

}  // namespace

BpeModel BpeModel::Train(const std::vector<std::string>& texts, const BpeTrainerOptions& options) {
  BpeModel model;
  model.pieces_.push_back({"<unk>", 0.0f, PieceType::kUnknown});
  model.pieces_.push_back({"<s>", 0.0f, PieceType::kControl});
  model.pieces_.push_back({"</s>", 0.0f, PieceType::kControl});
  for (int b = 0; b < 256; ++b) {
    static const char kHex[] = "0123456789ABCDEF";
    model.pieces_.push_back({std::string("<0x") + kHex[b >> 4] + kHex[b & 15] + ">", 0.0f, PieceType::kByte});
  }
  const auto add_normal_piece = [&](const std::string& piece) {
    const float score = -static_cast<float>(model.pieces_.size() - kFirstNormalId);
    model.pieces_.push_back({piece, score, PieceType::kNormal});
    return static_cast<int32_t>(model.pieces_.size() - 1);
  };

  // Words, in a fixed order so that ties break the same way on every run.
  std::unordered_map<std::string, int64_t> word_counts;
  for (const std::string& text : texts) CountWords(text, &word_counts);
  std::vector<std::pair<std::string, int64_t>> words_sorted(word_counts.begin(), word_counts.end());
  word_counts.clear();
  std::sort(words_sorted.begin(), words_sorted.end());

  // Step 3: the characters that get a piece.
  std::map<uint32_t, int64_t> char_counts;
  int64_t total_chars = 0;
  for (const auto& [word, count] : words_sorted) {
    for (size_t pos = 0; pos < word.size();) {
      size_t length = 0;
      const uint32_t code = NextChar(word, pos, &length);
      if (code != kNotAChar) char_counts[code] += count;
      total_chars += count;
      pos += length;
    }
  }
  std::vector<std::pair<uint32_t, int64_t>> chars(char_counts.begin(), char_counts.end());
  std::stable_sort(chars.begin(), chars.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  const int max_chars = std::max(0, options.vocab_size - kFirstNormalId);
  std::unordered_map<uint32_t, int32_t> char_ids;
  int64_t covered = 0;
  for (const auto& [code, count] : chars) {
    if (static_cast<int>(char_ids.size()) >= max_chars) break;
    if (total_chars > 0 &&
        static_cast<double>(covered) / static_cast<double>(total_chars) >= options.character_coverage) {
      break;
    }
    std::string piece;
    AppendUtf8(code, &piece);
    char_ids[code] = add_normal_piece(piece);
    covered += count;
  }

  // Words as symbol sequences; characters without a piece split a word, since they never merge.
  std::vector<Word> words;
  for (const auto& [word, count] : words_sorted) {
    std::vector<int32_t> symbols;
    for (size_t pos = 0; pos <= word.size();) {
      size_t length = 1;
      const uint32_t code = pos < word.size() ? NextChar(word, pos, &length) : kNotAChar;
      const auto it = char_ids.find(code);
      if (it != char_ids.end()) {
        symbols.push_back(it->second);
      } else {
        if (symbols.size() > 1) words.push_back({std::move(symbols), count});
        symbols.clear();
      }
      pos += length;
    }
  }
  words_sorted.clear();

  std::vector<int> piece_chars(model.pieces_.size(), 1);
  std::unordered_map<std::string, int32_t> piece_ids;
  for (size_t id = kFirstNormalId; id < model.pieces_.size(); ++id) piece_ids[model.pieces_[id].piece] = id;

  // Step 4.
  PairCounts pairs;
  for (size_t w = 0; w < words.size(); ++w) {
    const Word& word = words[w];
    for (size_t i = 0; i + 1 < word.symbols.size(); ++i) {
      pairs.Add(PairKey(word.symbols[i], word.symbols[i + 1]), word.count, static_cast<int32_t>(w));
    }
  }
  std::vector<int> last_visit(words.size(), -1);
  int merge_index = 0;
  uint64_t best = 0;
  int64_t best_count = 0;
  while (static_cast<int>(model.pieces_.size()) < options.vocab_size && pairs.Best(&best, &best_count)) {
    if (best_count < 2) break;
    const int32_t left = PairLeft(best);
    const int32_t right = PairRight(best);
    if (piece_chars[left] + piece_chars[right] > options.max_piece_chars) {
      pairs.Ban(best);
      continue;
    }
    // Two merges can spell the same piece ("a"+"bc", "ab"+"c"); the piece keeps its first id.
    const std::string piece = model.pieces_[left].piece + model.pieces_[right].piece;
    int32_t merged = 0;
    if (const auto it = piece_ids.find(piece); it != piece_ids.end()) {
      merged = it->second;
    } else {
      merged = add_normal_piece(piece);
      piece_ids[piece] = merged;
      piece_chars.push_back(piece_chars[left] + piece_chars[right]);
    }
    model.merges_.emplace_back(model.pieces_[left].piece, model.pieces_[right].piece);

    for (int32_t w : pairs.TakeWords(best)) {
      if (last_visit[w] == merge_index) continue;
      last_visit[w] = merge_index;
      Word& word = words[w];
      const std::vector<uint64_t> before = SortedPairs(word.symbols);
      if (!MergeInWord(&word.symbols, left, right, merged)) continue;
      const std::vector<uint64_t> after = SortedPairs(word.symbols);
      // Apply the difference of the two pair multisets, so that unchanged pairs cost nothing.
      size_t i = 0, j = 0;
      while (i < before.size() || j < after.size()) {
        if (j == after.size() || (i < before.size() && before[i] < after[j])) {
          pairs.Add(before[i++], -word.count, w);
        } else if (i == before.size() || after[j] < before[i]) {
          pairs.Add(after[j++], word.count, w);
        } else {
          ++i, ++j;
        }
      }
    }
    ++merge_index;
  }
  return model;
}

SentencePieceModel BpeModel::ToSentencePieceModel() const {
  SentencePieceModel model = LlamaStyleSentencePieceModel();
  model.pieces = pieces_;
  model.trainer_spec.vocab_size = static_cast<int32_t>(pieces_.size());
  return model;
}

Status BpeModel::WriteSentencePieceModel(const std::string& path) const {
  return WriteSentencePieceModelFile(ToSentencePieceModel(), path);
}

std::string BpeModel::ToHfTokenizerJson() const {
  using ojson = nlohmann::ordered_json;
  const std::string space(kSpaceSymbol);
  ojson root;
  root["version"] = "1.0";
  root["truncation"] = nullptr;
  root["padding"] = nullptr;
  ojson added = ojson::array();
  for (int id = 0; id < 3; ++id) {
    added.push_back({{"id", id},
                     {"content", pieces_[id].piece},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  root["added_tokens"] = added;
  root["normalizer"] = {{"type", "Sequence"},
                        {"normalizers",
                         {{{"type", "Prepend"}, {"prepend", space}},
                          {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", space}}}}};
  root["pre_tokenizer"] = nullptr;
  root["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
        {{"SpecialToken", {{"id", "<s>"}, {"type_id", 1}}}},
        {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  root["decoder"] = {{"type", "Sequence"},
                     {"decoders",
                      {{{"type", "Replace"}, {"pattern", {{"String", space}}}, {"content", " "}},
                       {{"type", "ByteFallback"}},
                       {{"type", "Fuse"}},
                       {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};

  ojson vocab = ojson::object();
  std::unordered_map<std::string, int32_t> normal_ids;
  for (size_t id = 0; id < pieces_.size(); ++id) {
    vocab[pieces_[id].piece] = id;
    if (pieces_[id].type == PieceType::kNormal) normal_ids[pieces_[id].piece] = static_cast<int32_t>(id);
  }
  // SentencePiece merges any two pieces whose concatenation is a piece, at that piece's score; HF
  // applies listed merges by rank. Listing every split of every piece, in score order (as HF's own
  // Llama converter does), makes the two agree.
  ojson merges = ojson::array();
  for (size_t id = kFirstNormalId; id < pieces_.size(); ++id) {
    const std::string& piece = pieces_[id].piece;
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      if ((static_cast<uint8_t>(piece[cut]) & 0xC0) == 0x80) continue;  // inside a character
      const std::string left = piece.substr(0, cut);
      const std::string right = piece.substr(cut);
      if (normal_ids.count(left) && normal_ids.count(right)) merges.push_back(left + " " + right);
    }
  }
  root["model"] = {{"type", "BPE"},
                   {"dropout", nullptr},
                   {"unk_token", "<unk>"},
                   {"continuing_subword_prefix", nullptr},
                   {"end_of_word_suffix", nullptr},
                   {"fuse_unk", true},
                   {"byte_fallback", true},
                   {"vocab", vocab},
                   {"merges", merges}};
  return root.dump(2);
}

Status BpeModel::WriteHfTokenizerJson(const std::string& path) const {
  std::string contents;
  try {
    contents = ToHfTokenizerJson();
  } catch (const nlohmann::json::exception& e) {
    return InternalError(path + ": cannot serialize tokenizer.json: " + e.what());
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return UnavailableError(path + ": cannot open for writing");
  out << contents << "\n";
  out.close();
  if (!out) return DataLossError(path + ": write failed");
  return OkStatus();
}

}  // namespace dtm
