// The token windows of ground-truth perplexity by the compression literature's protocol (SPEC
// "Probes, baseline and metrics", `ppl`; GPTQ, SparseGPT and Wanda evaluate Wikitext-2 this way):
//
//   rows   = the dataset's rows; for a raw text file, one row per line as Hugging Face's wikitext
//            loader makes them: the line with its "\n", or "" for a line of only whitespace
//   text   = "\n\n".join(rows)
//   tokens = tokenizer(text): one BOS at the very start, none elsewhere (HF's Llama tokenizer adds
//            BOS by default, and the reference code tokenizes the whole joined text in one call)
//   windows: tokens[k*W : (k+1)*W] for k = 0 .. len(tokens)/W - 1, the last partial window dropped
//   scored: every token of a window after its first; ppl = exp(mean NLL over the scored tokens).
//
// Free of the model, so that a worker can cut the same windows as `dtmctl ppl --text` does.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/probe_file.h"
#include "common/status.h"

namespace dtm {

class Tokenizer;

// The rows of a raw text file joined by blank lines, exactly as
//   rows = [row if row.strip() else "" for row in open(path, encoding="utf-8")]
//   "\n\n".join(rows)
// gives in Python (the wikitext-2-raw-v1 test split is this on wiki.test.raw): lines end at "\n",
// "\r\n" or "\r" (Python's universal newlines, each read as "\n"); a line keeps its "\n" (the
// file's last line has none when the file does not end with one); a line of only whitespace, as
// str.isspace counts it (ASCII and Unicode spaces, e.g. U+00A0, U+3000), becomes "". Bytes that are
// not UTF-8 count as text, not whitespace (Python would refuse the file).
std::string JoinLinesAsRows(std::string_view file_text);

// Windows of `window` consecutive tokens, the last partial window dropped. Ids are
// "<source>:<offset of the window's first token>". INVALID_ARGUMENT when window < 2 (a window must
// score a token) or when `tokens` holds fewer than `window` tokens (the message names both counts).
StatusOr<ProbeSet> CutPerplexityWindows(const std::vector<int32_t>& tokens, int64_t window, const std::string& source);

struct PerplexityWindows {
  ProbeSet windows;
  int64_t text_tokens = 0;     // tokens of the whole text, BOS included
  int64_t dropped_tokens = 0;  // the partial window at the end: text_tokens % window
};

// Tokenizes `text` (already joined) once with BOS and cuts it into windows.
StatusOr<PerplexityWindows> PerplexityWindowsFromText(std::string_view text, const Tokenizer& tokenizer,
                                                      int64_t window, const std::string& source);

}  // namespace dtm
