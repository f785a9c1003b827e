#include "worker/engine/probes.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "worker/engine/jsonl.h"
#include "worker/engine/sha256.h"
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

std::string ProbeSet::Fingerprint() const {
  Sha256 hash;
  for (const Probe& p : probes) {
    hash.Update(p.id);
    hash.Update(std::string_view("\0", 1));
    for (int32_t t : p.tokens) hash.Update(std::to_string(t) + ",");
    hash.Update(std::string_view("\n", 1));
  }
  return hash.HexDigest();
}

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

StatusOr<ProbeSet> ReadProbeFile(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<nlohmann::json> rows, ReadJsonLines(path));
  ProbeSet set;
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& row = rows[i];
    const std::string where = path + ": probe " + std::to_string(i + 1);
    if (!row.is_object() || !row.contains("id") || !row.contains("tokens")) {
      return InvalidArgumentError(where + ": expected an object with \"id\" and \"tokens\"");
    }
    if (!row["id"].is_string()) return InvalidArgumentError(where + ": \"id\" must be a string");
    const nlohmann::json& tokens = row["tokens"];
    if (!tokens.is_array() || tokens.empty()) return InvalidArgumentError(where + ": \"tokens\" must be a non-empty array");
    Probe probe{row["id"].get<std::string>(), {}};
    for (const nlohmann::json& t : tokens) {
      if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX) {
        return InvalidArgumentError(where + ": token ids must be non-negative integers");
      }
      probe.tokens.push_back(t.get<int32_t>());
    }
    set.probes.push_back(std::move(probe));
  }
  if (set.probes.empty()) return InvalidArgumentError(path + ": holds no probes");
  return set;
}

Status WriteProbeFile(const std::string& path, const ProbeSet& probes) {
  std::vector<nlohmann::json> rows;
  rows.reserve(probes.probes.size());
  for (const Probe& p : probes.probes) rows.push_back({{"id", p.id}, {"tokens", p.tokens}});
  return WriteJsonLines(path, rows);
}

}  // namespace dtm
