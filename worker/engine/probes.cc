#include "worker/engine/probes.h"

#include <filesystem>

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

// Accumulates text from consecutive lines until it encodes to at least `want` tokens.
StatusOr<ProbeSet> CutFromLines(const std::string& path, const Tokenizer& tokenizer, int64_t want,
                                int64_t count, bool wikitext) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(path));
  const std::string name = std::filesystem::path(path).filename().string();
  ProbeSet set;
  std::string text;
  int64_t start_line = 0;
  std::string line;
  while (static_cast<int64_t>(set.probes.size()) < count && reader->Next(&line)) {
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
      set.probes.push_back({name + ":" + std::to_string(start_line), std::move(ids)});
      text.clear();
    }
  }
  RETURN_IF_ERROR(reader->status());
  return set;
}

StatusOr<ProbeSet> CutFromJsonl(const std::string& path, const Tokenizer& tokenizer, int64_t want,
                                int64_t count) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(path));
  const std::string name = std::filesystem::path(path).filename().string();
  ProbeSet set;
  std::string line;
  while (static_cast<int64_t>(set.probes.size()) < count && reader->Next(&line)) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(reader->line_number());
    nlohmann::json doc = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return InvalidArgumentError(where + ": not valid JSON");
    if (!doc.is_object() || !doc.contains("text") || !doc["text"].is_string()) {
      return InvalidArgumentError(where + ": expected an object with a string \"text\" field");
    }
    std::vector<int32_t> ids = tokenizer.Encode(doc["text"].get<std::string>(), /*add_bos=*/true);
    if (static_cast<int64_t>(ids.size()) < want) continue;
    ids.resize(want);
    set.probes.push_back({name + ":" + std::to_string(reader->line_number()), std::move(ids)});
  }
  RETURN_IF_ERROR(reader->status());
  return set;
}

}  // namespace

StatusOr<CorpusFormat> ParseCorpusFormat(const std::string& name) {
  if (name == "auto") return CorpusFormat::kAuto;
  if (name == "text") return CorpusFormat::kText;
  if (name == "wikitext") return CorpusFormat::kWikitext;
  if (name == "jsonl" || name == "c4") return CorpusFormat::kJsonl;
  return InvalidArgumentError("unknown corpus format '" + name + "': expected auto, text, wikitext or jsonl");
}

StatusOr<ProbeSet> MakeProbes(const std::string& corpus_path, const Tokenizer& tokenizer,
                              const MakeProbesOptions& options) {
  if (options.prefix_len < 1) return InvalidArgumentError("--prefix must be at least 1");
  if (options.count < 1) return InvalidArgumentError("--count must be at least 1");
  if (!std::filesystem::exists(corpus_path)) return NotFoundError(corpus_path + ": no such corpus file");
  CorpusFormat format = options.format == CorpusFormat::kAuto ? DetectFormat(corpus_path) : options.format;
  StatusOr<ProbeSet> set =
      format == CorpusFormat::kJsonl
          ? CutFromJsonl(corpus_path, tokenizer, options.prefix_len, options.count)
          : CutFromLines(corpus_path, tokenizer, options.prefix_len, options.count, format == CorpusFormat::kWikitext);
  if (!set.ok()) return set.status();
  if (static_cast<int64_t>(set->probes.size()) < options.count) {
    return InvalidArgumentError(corpus_path + ": yields only " + std::to_string(set->probes.size()) + " probes of " +
                                std::to_string(options.prefix_len) + " tokens, " + std::to_string(options.count) +
                                " asked for (prefix longer than the text?)");
  }
  return set;
}

}  // namespace dtm
