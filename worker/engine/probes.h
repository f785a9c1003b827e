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

// Which candidates become probes. A candidate is a JSON-lines document of at least n tokens, or for
// text a run of lines cut in corpus order until it has n tokens; each is named by its starting line.
// kFirst: the first `count` candidates, in corpus order (reading stops there).
// kRandom: `count` candidates drawn uniformly without replacement (the paper samples C4 at random):
// the candidates of the `count` smallest keys ProbeSampleKey(seed, starting line), in key order. The
// whole corpus is read. The keys are 64-bit integer arithmetic only, so a seed selects the same probes
// on every machine and standard library, and the probes of a smaller count are the first ones of a
// larger count with the same seed.
enum class ProbeSampling { kFirst, kRandom };
StatusOr<ProbeSampling> ParseProbeSampling(const std::string& name);  // first|random

// The index-th output (0-based) of SplitMix64 (Steele, Lea and Flood 2014) seeded with `seed`. Distinct
// indices get distinct keys: the state seed + (index + 1) * gamma is distinct for them (gamma is odd)
// and the output mix is a bijection.
uint64_t ProbeSampleKey(uint64_t seed, uint64_t index);

struct MakeProbesOptions {
  int64_t count = 1000;       // |D|
  int64_t prefix_len = 100;   // n, the BOS token included
  CorpusFormat format = CorpusFormat::kAuto;  // auto: jsonl for *.json[l][.gz], else text
  ProbeSampling sampling = ProbeSampling::kFirst;
  uint64_t seed = 0;          // kRandom only
};

// Cuts `count` probes of exactly `prefix_len` tokens (BOS first) from the corpus, chosen by
// `sampling`; no candidate is used twice. Probe ids are "<file name>:<line>" of the line where the
// probe starts. INVALID_ARGUMENT, saying how many there are, when the corpus has fewer candidates.
StatusOr<ProbeSet> MakeProbes(const std::string& corpus_path, const Tokenizer& tokenizer,
                              const MakeProbesOptions& options);


}  // namespace dtm
