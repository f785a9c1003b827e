// Probe sets cut from a corpus: token prefixes y[:n] (the probe file format is common/probe_file.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/probe_file.h"
#include "common/status.h"

namespace dtm {

class Tokenizer;

// kText: plain text; a probe starts at a line and takes lines until it has n tokens.
// kWikitext: the same, skipping blank lines and "= Heading =" lines.
// kJsonl: C4-style JSON lines with a "text" field; one probe per document of at least n tokens.
enum class CorpusFormat { kAuto, kText, kWikitext, kJsonl };
StatusOr<CorpusFormat> ParseCorpusFormat(const std::string& name);  // auto|text|wikitext|jsonl

struct MakeProbesOptions {
  int64_t count = 1000;       // |D|
  int64_t prefix_len = 100;   // n, the BOS token included
  CorpusFormat format = CorpusFormat::kAuto;  // auto: jsonl for *.json[l][.gz], else text
};

// Cuts `count` probes of exactly `prefix_len` tokens (BOS first) from the corpus, in corpus order.
// Probe ids are "<file name>:<line>" of the line where the probe starts.
StatusOr<ProbeSet> MakeProbes(const std::string& corpus_path, const Tokenizer& tokenizer,
                              const MakeProbesOptions& options);


}  // namespace dtm
