#include "worker/engine/hf_tokenizer_json.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/jsonl.h"

namespace dtm {
namespace {

using json = nlohmann::json;

// Normalizers of tokenizer.json that Llama-family files use; anything else is refused by name.
Status ParseNormalizer(const json& node, const std::string& source,
                       std::vector<HfTokenizerJson::NormalizerStep>* steps) {
  if (node.is_null()) return OkStatus();
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    for (const json& child : node.at("normalizers")) RETURN_IF_ERROR(ParseNormalizer(child, source, steps));
    return OkStatus();
  }
  if (type == "Prepend") {
    steps->push_back({true, node.at("prepend").get<std::string>(), ""});
    return OkStatus();
  }
  if (type == "Replace") {
    const json& pattern = node.at("pattern");
    if (!pattern.contains("String")) {
      return UnimplementedError(source + ": Replace normalizer with a regex pattern is not supported");
    }
    steps->push_back({false, pattern.at("String").get<std::string>(), node.at("content").get<std::string>()});
    return OkStatus();
  }
  return UnimplementedError(source + ": normalizer '" + type +
                            "' is not supported (Prepend, Replace, Sequence are)");
}

Status ParsePreTokenizer(const json& node, const std::string& source, HfTokenizerJson* out) {
  if (node.is_null()) return OkStatus();
  const std::string type = node.value("type", "");
  if (type == "Sequence") {
    for (const json& child : node.at("pretokenizers")) RETURN_IF_ERROR(ParsePreTokenizer(child, source, out));
    return OkStatus();
  }
  if (type != "Metaspace") {
    return UnimplementedError(source + ": pre-tokenizer '" + type + "' is not supported (Metaspace is)");
  }
  if (out->has_metaspace) return UnimplementedError(source + ": more than one Metaspace pre-tokenizer");
  out->has_metaspace = true;
  out->metaspace_replacement = node.value("replacement", out->metaspace_replacement);
  // Older files say add_prefix_space; newer ones say prepend_scheme ("first" and "always" act alike
  // here, because this tokenizer does not cut the text at special tokens).
  if (node.contains("prepend_scheme") && node.at("prepend_scheme").is_string()) {
    out->metaspace_prepend = node.at("prepend_scheme").get<std::string>() != "never";
  } else {
    out->metaspace_prepend = node.value("add_prefix_space", true);
  }
  out->metaspace_split = node.value("split", true);
  return OkStatus();
}

// Options of HF's BPE model that this tokenizer does not implement are refused rather than ignored.
Status CheckModelIsPlainBpe(const json& model, const std::string& source) {
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") {
    return UnimplementedError(source + ": model type '" + type + "' is not supported (BPE is)");
  }
  if (model.contains("dropout") && model.at("dropout").is_number() && model.at("dropout").get<double>() > 0) {
    return UnimplementedError(source + ": BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && model.at(key).is_string() && !model.at(key).get<std::string>().empty()) {
      return UnimplementedError(source + ": BPE " + key + " is not supported");
    }
  }
  return OkStatus();
}

// A non-negative integer field. nlohmann converts a float such as 1e300 to an integer without a
// check (undefined behaviour), and HF's own reader refuses anything but integers, so only integers
// pass; `what` names the field in the error.
StatusOr<int64_t> NonNegativeInteger(const json& value, const std::string& source, const std::string& what) {
  if (!value.is_number_integer() ||
      (value.is_number_unsigned() ? value.get<uint64_t>() > INT64_MAX : value.get<int64_t>() < 0)) {
    return InvalidArgumentError(source + ": " + what + " must be a non-negative integer, got " +
                                value.dump(-1, ' ', false, json::error_handler_t::replace));
  }
  return value.get<int64_t>();
}

StatusOr<bool> DecoderStripsLeadingSpace(const json& node, const std::string& source) {
  if (!node.is_object()) return false;
  const std::string type = node.value("type", "");
  if (type == "Sequence" && node.contains("decoders")) {
    for (const json& child : node.at("decoders")) {
      ASSIGN_OR_RETURN(const bool strips, DecoderStripsLeadingSpace(child, source));
      if (strips) return true;
    }
    return false;
  }
  if (type == "Strip") {
    ASSIGN_OR_RETURN(const int64_t start,
                     NonNegativeInteger(node.value("start", json(0)), source, "Strip decoder's start"));
    return node.value("content", std::string()) == " " && start > 0;
  }
  if (type == "Metaspace") {
    if (node.contains("prepend_scheme") && node.at("prepend_scheme").is_string()) {
      return node.at("prepend_scheme").get<std::string>() != "never";
    }
    return node.value("add_prefix_space", true);
  }
  return false;
}

Status ParseVocabulary(const json& root, const std::string& source, HfTokenizerJson* out) {
  const json& model = root.at("model");
  const json& vocab = model.at("vocab");
  if (!vocab.is_object()) return InvalidArgumentError(source + ": model.vocab is not an object");
  const auto place = [&](int64_t id, const std::string& piece, PieceType type, bool from_model) -> Status {
    if (id < 0 || id > 10'000'000) {
      return InvalidArgumentError(source + ": token id " + std::to_string(id) + " out of range");
    }
    if (static_cast<size_t>(id) >= out->pieces.size()) {
      out->pieces.resize(id + 1);
      out->types.resize(id + 1, PieceType::kUnused);
      out->in_model_vocab.resize(id + 1, 0);
    }
    if (out->in_model_vocab[id] && out->pieces[id] != piece) {
      return InvalidArgumentError(source + ": id " + std::to_string(id) + " names both '" + out->pieces[id] +
                                  "' and '" + piece + "'");
    }
    out->pieces[id] = piece;
    out->types[id] = type;
    out->in_model_vocab[id] = out->in_model_vocab[id] || from_model;
    return OkStatus();
  };
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const PieceType type = ParseBytePiece(it.key()) >= 0 ? PieceType::kByte : PieceType::kNormal;
    ASSIGN_OR_RETURN(const int64_t id,
                     NonNegativeInteger(it.value(), source, "the id of '" + it.key() + "'"));
    RETURN_IF_ERROR(place(id, it.key(), type, true));
  }
  // Added tokens usually repeat vocabulary entries; they say which ones are special.
  if (root.contains("added_tokens") && root.at("added_tokens").is_array()) {
    for (const json& added : root.at("added_tokens")) {
      const PieceType type = added.value("special", false) ? PieceType::kControl : PieceType::kUserDefined;
      ASSIGN_OR_RETURN(const int64_t id, NonNegativeInteger(added.at("id"), source, "an added token's id"));
      RETURN_IF_ERROR(place(id, added.at("content").get<std::string>(), type, false));
    }
  }
  if (model.contains("unk_token") && model.at("unk_token").is_string()) {
    const std::string unk = model.at("unk_token").get<std::string>();
    const auto it = std::find(out->pieces.begin(), out->pieces.end(), unk);
    if (it == out->pieces.end()) {
      return InvalidArgumentError(source + ": unk_token '" + unk + "' is not in the vocabulary");
    }
    out->types[it - out->pieces.begin()] = PieceType::kUnknown;
  }
  return OkStatus();
}

Status ParseMerges(const json& merges, const std::string& source, HfTokenizerJson* out) {
  // "a b" strings, or [a, b] pairs in newer files.
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    const std::string line = m.is_string() ? m.get<std::string>() : "";
    const size_t space = line.find(' ');
    if (space != std::string::npos && line.find(' ', space + 1) == std::string::npos) {
      out->merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (m.is_array() && m.size() == 2) {
      out->merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      return InvalidArgumentError(source + ": merge " + std::to_string(rank) + " is not two pieces");
    }
  }
  return OkStatus();
}

// A token named in tokenizer_config.json: a string or an AddedToken object {"content": ...}.
std::string ConfigTokenName(const json& config, const char* key) {
  if (!config.is_object() || !config.contains(key)) return "";
  const json& value = config.at(key);
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object() && value.contains("content") && value.at("content").is_string()) {
    return value.at("content").get<std::string>();
  }
  return "";
}

Status ReadFileToString(const std::string& path, std::string* contents) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) return DataLossError(path + ": read error");
  *contents = buffer.str();
  return OkStatus();
}

}  // namespace

int ParseBytePiece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return -1;
  int value = 0;
  for (size_t i = 3; i < 5; ++i) {
    const char c = piece[i];
    int digit = 0;
    if (c >= '0' && c <= '9') {
      digit = c - '0';
    } else if (c >= 'A' && c <= 'F') {
      digit = c - 'A' + 10;
    } else {
      return -1;  // the reference tools write upper case only
    }
    value = value * 16 + digit;
  }
  return value;
}

StatusOr<HfTokenizerJson> ParseHfTokenizerJson(std::string_view json_text, std::string_view config_json,
                                               const std::string& source) {
  // nlohmann throws on malformed or mistyped JSON; that ends here, as one error naming the file.
  try {
    const json root = json::parse(json_text.begin(), json_text.end());
    const json config =
        config_json.empty() ? json::object() : json::parse(config_json.begin(), config_json.end());
    if (JsonNestedDeeperThan(root, kMaxJsonNesting) || JsonNestedDeeperThan(config, kMaxJsonNesting)) {
      return InvalidArgumentError(source + ": nests deeper than " + std::to_string(kMaxJsonNesting) +
                                  " levels");
    }
    if (!root.is_object() || !root.contains("model")) {
      return InvalidArgumentError(source + ": no \"model\" section");
    }
    const json& model = root.at("model");
    RETURN_IF_ERROR(CheckModelIsPlainBpe(model, source));

    HfTokenizerJson out;
    out.byte_fallback = model.value("byte_fallback", false);
    out.fuse_unk = model.value("fuse_unk", false);
    out.ignore_merges = model.value("ignore_merges", false);
    RETURN_IF_ERROR(ParseVocabulary(root, source, &out));
    RETURN_IF_ERROR(ParseNormalizer(root.value("normalizer", json()), source, &out.normalizer_steps));
    RETURN_IF_ERROR(ParsePreTokenizer(root.value("pre_tokenizer", json()), source, &out));
    ASSIGN_OR_RETURN(out.decoder_strips_leading_space,
                     DecoderStripsLeadingSpace(root.value("decoder", json()), source));
    RETURN_IF_ERROR(ParseMerges(model.at("merges"), source, &out));

    const std::string bos = ConfigTokenName(config, "bos_token");
    const std::string eos = ConfigTokenName(config, "eos_token");
    if (!bos.empty()) out.bos_token = bos;
    if (!eos.empty()) out.eos_token = eos;
    return out;
  } catch (const json::exception& e) {
    return InvalidArgumentError(source + ": invalid tokenizer.json: " + e.what());
  }
}

StatusOr<HfTokenizerJson> ReadHfTokenizerJsonFile(const std::string& path) {
  std::string contents;
  RETURN_IF_ERROR(ReadFileToString(path, &contents));
  std::string config;
  const std::filesystem::path config_path =
      std::filesystem::path(path).parent_path() / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec)) {
    RETURN_IF_ERROR(ReadFileToString(config_path.string(), &config));
  }
  return ParseHfTokenizerJson(contents, config, path);
}

}  // namespace dtm
