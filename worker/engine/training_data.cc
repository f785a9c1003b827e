#include "worker/engine/training_data.h"

#include <algorithm>
#include <memory>
#include <random>
#include <string_view>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/jsonl.h"
#include "common/sha256.h"
#include "common/user_text.h"
#include "worker/engine/engine_error.h"
#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool OnlyAsciiWhitespace(std::string_view s) { return s.find_first_not_of(" \t\n\r\f\v") == std::string_view::npos; }

// Resolves "auto" by the file's name; empty for an unknown format.
std::string ResolveFormat(const TrainingDataOptions& options) {
  if (options.format == "jsonl" || options.format == "text") return options.format;
  if (options.format != "auto") return "";
  std::string_view name = options.path;
  if (IsGzipPath(name)) name.remove_suffix(3);
  return EndsWith(name, ".jsonl") || EndsWith(name, ".json") ? "jsonl" : "text";
}

// The packed stream as documents arrive: BOS doc EOS, one after another.
class Packer {
 public:
  Packer(const Tokenizer& tokenizer, int64_t row, int64_t max_sequences)
      : tokenizer_(tokenizer), row_(row), max_sequences_(max_sequences) {}

  void Add(std::string_view text) {
    if (OnlyAsciiWhitespace(text)) return;
    const std::vector<int32_t> ids = tokenizer_.Encode(text, /*add_bos=*/false);
    ++documents_;
    tokens_ += static_cast<int64_t>(ids.size()) + 2;
    stream_->push_back(tokenizer_.bos_id());
    stream_->insert(stream_->end(), ids.begin(), ids.end());
    stream_->push_back(tokenizer_.eos_id());
  }

  // Whether max_sequences sequences are packed, so that reading may stop.
  bool full() const { return max_sequences_ > 0 && sequences() >= max_sequences_; }
  int64_t sequences() const { return static_cast<int64_t>(stream_->size()) / row_; }
  int64_t documents() const { return documents_; }
  int64_t tokens() const { return tokens_; }

  // The packed sequences [N, row] (at most max_sequences), the stream handed over without a copy.
  torch::Tensor TakeSequences() {
    const int64_t n = max_sequences_ > 0 ? std::min(sequences(), max_sequences_) : sequences();
    stream_->resize(static_cast<size_t>(n * row_));
    std::vector<int32_t>* owned = stream_.release();
    return torch::from_blob(
        owned->data(), {n, row_}, [owned](void*) { delete owned; }, torch::kInt32);
  }

 private:
  const Tokenizer& tokenizer_;
  const int64_t row_;
  const int64_t max_sequences_;
  std::unique_ptr<std::vector<int32_t>> stream_ = std::make_unique<std::vector<int32_t>>();
  int64_t documents_ = 0;
  int64_t tokens_ = 0;
};

// One object per non-blank line, its string "text" a document.
Status ReadJsonLinesInto(LineReader& reader, Packer& packer) {
  const std::string& path = reader.path();
  std::string line;
  while (!packer.full() && reader.Next(&line)) {
    if (OnlyAsciiWhitespace(line)) continue;
    const std::string where = path + ":" + std::to_string(reader.line_number());
    // Values nested deeper than kMaxJsonNesting are discarded while parsing, so that no recursion
    // over the parsed value runs that deep; the line is then refused.
    bool too_deep = false;
    const nlohmann::json::parser_callback_t keep_shallow = [&too_deep](int depth, nlohmann::json::parse_event_t,
                                                                        nlohmann::json&) {
      if (depth > kMaxJsonNesting) too_deep = true;
      return depth <= kMaxJsonNesting;
    };
    nlohmann::json row;
    try {
      row = nlohmann::json::parse(line, keep_shallow);
    } catch (const nlohmann::json::exception& e) {
      return DataLossError(where + ": invalid JSON: " + OneLine(e.what()));
    }
    if (too_deep) {
      return InvalidArgumentError(where + ": nests deeper than " + std::to_string(kMaxJsonNesting) +
                                  " levels; expected an object with a string \"text\"");
    }
    const auto text = row.is_object() ? row.find("text") : row.end();
    if (!row.is_object() || text == row.end() || !text->is_string()) {
      return InvalidArgumentError(where + ": expected a JSON object with a string \"text\"");
    }
    packer.Add(text->get_ref<const std::string&>());
  }
  return reader.status();
}

// Paragraphs separated by lines of only whitespace, a paragraph's lines joined with "\n".
Status ReadParagraphsInto(LineReader& reader, Packer& packer) {
  std::string paragraph;  // empty until a line of text arrives: every line kept holds text
  std::string line;
  while (!packer.full() && reader.Next(&line)) {
    if (OnlyAsciiWhitespace(line)) {
      packer.Add(paragraph);
      paragraph.clear();
      continue;
    }
    if (!paragraph.empty()) paragraph += '\n';
    paragraph += line;
  }
  RETURN_IF_ERROR(reader.status());
  if (!packer.full()) packer.Add(paragraph);
  return OkStatus();
}

std::string Fingerprint(int64_t seq_len, const torch::Tensor& sequences) {
  // Little-endian bytes, written out so that the digest does not depend on the host's byte order;
  // hashed a block at a time, as a call per token would cost more than the hashing.
  std::string bytes;
  auto put_le = [&bytes](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<char>(static_cast<uint8_t>(v >> (8 * i))));
  };
  Sha256 hash;
  put_le(static_cast<uint64_t>(seq_len), 8);
  const int32_t* tokens = sequences.data_ptr<int32_t>();
  constexpr int64_t kBlockTokens = 1 << 16;
  for (int64_t i = 0; i < sequences.numel(); ++i) {
    put_le(static_cast<uint32_t>(tokens[i]), 4);
    if ((i + 1) % kBlockTokens == 0) {
      hash.Update(bytes);
      bytes.clear();
    }
  }
  hash.Update(bytes);
  return hash.HexDigest();
}

StatusOr<TrainingData> Load(const TrainingDataOptions& options, const Tokenizer& tokenizer,
                            int64_t max_position_embeddings) {
  const std::string& path = options.path;
  if (options.seq_len < 1) {
    return InvalidArgumentError(path + ": seq_len " + std::to_string(options.seq_len) + " must be at least 1");
  }
  // A sequence's input is seq_len tokens at positions 0 .. seq_len - 1; its extra token is a target only.
  if (options.seq_len > max_position_embeddings) {
    return InvalidArgumentError(path + ": seq_len " + std::to_string(options.seq_len) +
                                " exceeds the model's positions (max_position_embeddings " +
                                std::to_string(max_position_embeddings) + ")");
  }
  if (options.max_sequences < 0) {
    return InvalidArgumentError(path + ": max_sequences " + std::to_string(options.max_sequences) + " is negative");
  }
  const std::string format = ResolveFormat(options);
  if (format.empty()) {
    return InvalidArgumentError(path + ": unknown training data format \"" + options.format +
                                "\" (expected auto, jsonl or text)");
  }
  if (tokenizer.bos_id() < 0 || tokenizer.eos_id() < 0) {
    return InvalidArgumentError(path + ": the tokenizer has no BOS or no EOS token to join documents with");
  }

  ReadLimits limits;
  limits.regular_file_only = true;
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(path, limits));
  const int64_t row = options.seq_len + 1;
  Packer packer(tokenizer, row, options.max_sequences);
  RETURN_IF_ERROR(format == "jsonl" ? ReadJsonLinesInto(*reader, packer) : ReadParagraphsInto(*reader, packer));
  if (packer.sequences() == 0) {
    return InvalidArgumentError(path + ": " + std::to_string(packer.tokens()) + " tokens (BOS and EOS included) from " +
                                std::to_string(packer.documents()) + " documents, fewer than one sequence of " +
                                std::to_string(row) + " tokens (seq_len + 1)");
  }

  TrainingData data;
  data.seq_len = options.seq_len;
  data.documents = packer.documents();
  data.tokens = packer.tokens();
  data.seed = options.seed;
  data.sequences = packer.TakeSequences();
  data.fingerprint = Fingerprint(data.seq_len, data.sequences);
  return data;
}

// A uniform draw from [0, bound), bound >= 1: the first r not below 2^64 mod bound, reduced mod bound
// (the values kept are a whole number of copies of [0, bound)).
uint64_t UniformBelow(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

std::vector<int64_t> EpochPermutation(int64_t n, uint64_t seed, uint64_t epoch) {
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(epoch),
                    static_cast<uint32_t>(epoch >> 32)};
  std::mt19937_64 rng(seq);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) perm[i] = i;
  for (int64_t i = n - 1; i >= 1; --i) {
    std::swap(perm[i], perm[UniformBelow(rng, static_cast<uint64_t>(i) + 1)]);
  }
  return perm;
}

}  // namespace

StatusOr<TrainingData> LoadTrainingData(const TrainingDataOptions& options, const Tokenizer& tokenizer,
                                        int64_t max_position_embeddings) {
  try {
    return Load(options, tokenizer, max_position_embeddings);
  } catch (const std::exception& e) {
    return StatusFromException(e, options.path + ": loading training data failed");
  }
}

std::vector<int64_t> BatchIndices(const TrainingData& data, int64_t step, int64_t batch_size) {
  const int64_t n = data.sequences.defined() ? data.sequences.size(0) : 0;
  if (step < 0 || batch_size < 1 || n == 0) return {};
  std::vector<int64_t> out;
  out.reserve(static_cast<size_t>(batch_size));
  int64_t position = step * batch_size;
  int64_t epoch = -1;
  std::vector<int64_t> perm;
  while (static_cast<int64_t>(out.size()) < batch_size) {
    if (position / n != epoch) {
      epoch = position / n;
      perm = EpochPermutation(n, data.seed, static_cast<uint64_t>(epoch));
    }
    out.push_back(perm[static_cast<size_t>(position % n)]);
    ++position;
  }
  return out;
}

torch::Tensor BatchSlice(const TrainingData& data, int64_t step, int64_t batch_size, int64_t begin, int64_t end) {
  const std::vector<int64_t> indices = BatchIndices(data, step, batch_size);
  const auto size = static_cast<int64_t>(indices.size());
  begin = std::clamp<int64_t>(begin, 0, size);
  end = std::clamp<int64_t>(end, begin, size);
  if (begin == end) return torch::empty({0, data.seq_len + 1}, torch::kInt64);
  const torch::Tensor rows =
      torch::tensor(std::vector<int64_t>(indices.begin() + begin, indices.begin() + end), torch::kInt64);
  return data.sequences.index_select(0, rows).to(torch::kInt64);
}

}  // namespace dtm
