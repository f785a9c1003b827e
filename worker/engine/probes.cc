#include "worker/engine/probes.h"

#include <algorithm>
#include <filesystem>
#include <utility>

#include <nlohmann/json.hpp>

#include "common/jsonl.h"
#include "common/sha256.h"
#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

CorpusFormat DetectFormat(const std::string& path) {
  for (const char* ext : {".jsonl", ".json", ".jsonl.gz", ".json.gz"}) {
    if (EndsWith(path, ext)) return CorpusFormat::kJsonl;
  }
  return CorpusFormat::kText;
}

bool IsWikitextSkipped(const std::string& line) {
  size_t first = line.find_first_not_of(" \t\r");
  if (first == std::string::npos) return true;
  size_t last = line.find_last_not_of(" \t\r");
  return line[first] == '=' && line[last] == '=';  // " = Title = ", " = = Section = = "
}

// Keeps the candidates that become probes under one sampling mode, so that the corpus readers below
// need not know the mode.
class ProbeCollector {
 public:
  explicit ProbeCollector(const MakeProbesOptions& options) : options_(options) {}

  // Whether the reader may stop: kFirst has its probes.
  bool Done() const { return options_.sampling == ProbeSampling::kFirst && Size() >= options_.count; }

  // Whether the candidate starting at `line` can still become a probe, so that tokenizing it is
  // worth it. Under kRandom a candidate whose key is above every kept one cannot.
  bool Wants(int64_t line) const {
    if (options_.sampling == ProbeSampling::kFirst || Size() < options_.count) return true;
    return Key(line) < kept_.front().first;
  }

  void Add(int64_t line, Probe probe) {
    if (options_.sampling == ProbeSampling::kFirst) {
      first_.probes.push_back(std::move(probe));
      return;
    }
    if (!Wants(line)) return;
    kept_.emplace_back(Key(line), std::move(probe));
    std::push_heap(kept_.begin(), kept_.end(), KeyLess);
    if (Size() > options_.count) {  // drop the largest key
      std::pop_heap(kept_.begin(), kept_.end(), KeyLess);
      kept_.pop_back();
    }
  }

  // Fewer than `count` candidates means every candidate of the corpus was kept (Wants was always
  // true), so Size() is then the number of candidates the corpus has.
  int64_t Size() const {
    return static_cast<int64_t>(options_.sampling == ProbeSampling::kFirst ? first_.probes.size() : kept_.size());
  }

  ProbeSet Finish() {
    if (options_.sampling == ProbeSampling::kFirst) return std::move(first_);
    std::sort_heap(kept_.begin(), kept_.end(), KeyLess);  // ascending keys
    ProbeSet set;
    for (Keyed& k : kept_) set.probes.push_back(std::move(k.second));
    return set;
  }

 private:
  using Keyed = std::pair<uint64_t, Probe>;
  static bool KeyLess(const Keyed& a, const Keyed& b) { return a.first < b.first; }
  uint64_t Key(int64_t line) const { return ProbeSampleKey(options_.seed, static_cast<uint64_t>(line)); }

  const MakeProbesOptions& options_;
  ProbeSet first_;
  std::vector<Keyed> kept_;  // kRandom: a max-heap by key (keys never tie) of at most `count`
};

// Accumulates text from consecutive lines until it encodes to at least `want` tokens. Every line is
// tokenized whatever the sampling: where a candidate ends depends on the candidate before it.
Status CutFromLines(const std::string& path, const Tokenizer& tokenizer, int64_t want, bool wikitext,
                    ProbeCollector* collector) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(path));
  const std::string name = std::filesystem::path(path).filename().string();
  std::string text;
  int64_t start_line = 0;
  std::string line;
  while (!collector->Done() && reader->Next(&line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (wikitext ? IsWikitextSkipped(line) : line.find_first_not_of(" \t") == std::string::npos) continue;
    if (text.empty()) {
      start_line = reader->line_number();
      size_t first = line.find_first_not_of(" \t");
      text = line.substr(first);
    } else {
      text += " " + line;
    }
    std::vector<int32_t> ids = tokenizer.Encode(text, /*add_bos=*/true);
    if (static_cast<int64_t>(ids.size()) >= want) {
      ids.resize(want);
      collector->Add(start_line, {name + ":" + std::to_string(start_line), std::move(ids)});
      text.clear();
    }
  }
  return reader->status();
}

// Every line is parsed, so that a malformed line is an error under either sampling; only the lines
// the collector wants are tokenized.
Status CutFromJsonl(const std::string& path, const Tokenizer& tokenizer, int64_t want, ProbeCollector* collector) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(path));
  const std::string name = std::filesystem::path(path).filename().string();
  std::string line;
  while (!collector->Done() && reader->Next(&line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(reader->line_number());
    nlohmann::json doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return InvalidArgumentError(where + ": not valid JSON");
    if (!doc.is_object() || !doc.contains("text") || !doc["text"].is_string()) {
      return InvalidArgumentError(where + ": expected an object with a string \"text\" field");
    }
    const int64_t line_number = reader->line_number();
    if (!collector->Wants(line_number)) continue;
    std::vector<int32_t> ids = tokenizer.Encode(doc["text"].get<std::string>(), /*add_bos=*/true);
    if (static_cast<int64_t>(ids.size()) < want) continue;
    ids.resize(want);
    collector->Add(line_number, {name + ":" + std::to_string(line_number), std::move(ids)});
  }
  return reader->status();
}

}  // namespace

StatusOr<CorpusFormat> ParseCorpusFormat(const std::string& name) {
  if (name == "auto") return CorpusFormat::kAuto;
  if (name == "text") return CorpusFormat::kText;
  if (name == "wikitext") return CorpusFormat::kWikitext;
  if (name == "jsonl" || name == "c4") return CorpusFormat::kJsonl;
  return InvalidArgumentError("unknown corpus format '" + name + "': expected auto, text, wikitext or jsonl");
}

StatusOr<ProbeSampling> ParseProbeSampling(const std::string& name) {
  if (name == "first") return ProbeSampling::kFirst;
  if (name == "random") return ProbeSampling::kRandom;
  return InvalidArgumentError("unknown --sample '" + name + "': expected first or random");
}

uint64_t ProbeSampleKey(uint64_t seed, uint64_t index) {
  uint64_t z = seed + (index + 1) * 0x9E3779B97F4A7C15ULL;  // unsigned: wraps modulo 2^64
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

StatusOr<ProbeSet> MakeProbes(const std::string& corpus_path, const Tokenizer& tokenizer,
                              const MakeProbesOptions& options) {
  if (options.prefix_len < 1) return InvalidArgumentError("--prefix must be at least 1");
  if (options.count < 1) return InvalidArgumentError("--count must be at least 1");
  if (!std::filesystem::exists(corpus_path)) return NotFoundError(corpus_path + ": no such corpus file");
  CorpusFormat format = options.format == CorpusFormat::kAuto ? DetectFormat(corpus_path) : options.format;
  ProbeCollector collector(options);
  RETURN_IF_ERROR(format == CorpusFormat::kJsonl
                      ? CutFromJsonl(corpus_path, tokenizer, options.prefix_len, &collector)
                      : CutFromLines(corpus_path, tokenizer, options.prefix_len,
                                     format == CorpusFormat::kWikitext, &collector));
  if (collector.Size() < options.count) {
    return InvalidArgumentError(corpus_path + ": yields only " + std::to_string(collector.Size()) + " probes of " +
                                std::to_string(options.prefix_len) + " tokens, " + std::to_string(options.count) +
                                " asked for (prefix longer than the text?); no document is used twice");
  }
  return collector.Finish();
}

}  // namespace dtm
