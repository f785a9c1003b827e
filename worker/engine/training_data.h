// The packed token sequences that recovery training fine-tunes on, and the seeded order it reads
// them in.
//
// Packing, as Llama's pre-training joins documents (L = seq_len):
//   stream    = BOS doc_1 EOS BOS doc_2 EOS ...   (doc_i = Encode(text_i, add_bos=false))
//   sequences = stream[k*(L+1) : (k+1)*(L+1)] for k = 0 .. len(stream)/(L+1) - 1, the last partial
//               chunk dropped. A sequence's first L tokens are the input, its last L their targets.
//
// Free of the model, so that a test or a tool can cut the same sequences as a worker does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/status.h"

namespace dtm {

class Tokenizer;

// Training text for recovery training (SPEC "Recovery training"): documents tokenized with the
// model's own tokenizer, joined as Llama's pre-training joins them (BOS + document + EOS, one after
// another), and cut into packed sequences of seq_len + 1 tokens (inputs and their next-token targets).
struct TrainingDataOptions {
  std::string path;             // the file: JSON lines (one object per line with a string "text", as C4 ships) or raw text; ".gz" is gunzipped
  std::string format = "auto";  // "auto": JSON lines when the name ends in .jsonl or .json (before any .gz), raw text otherwise; "jsonl"; "text"
  int64_t seq_len = 2048;       // tokens of each training sequence's input
  int64_t max_sequences = 0;    // stop reading once this many sequences are packed; 0 = the whole file
  uint64_t seed = 0;            // the order of the sequences (BatchIndices)
};

struct TrainingData {
  torch::Tensor sequences;      // [N, seq_len + 1] int32 (4 bytes a token: C4's 262M tokens of a 500-step round at paper scale hold 1 GB)
  int64_t seq_len = 0;
  int64_t documents = 0;        // documents read (JSON lines rows or, for raw text, paragraphs separated by blank lines)
  int64_t tokens = 0;           // tokens in the packed stream, BOS/EOS included, the dropped tail included
  uint64_t seed = 0;
  std::string fingerprint;      // hex SHA-256 of seq_len and every packed token (common/sha256.h), naming what a run trained on
};

// Reads, tokenizes and packs. INVALID_ARGUMENT naming the file for: seq_len < 1, seq_len beyond
// `max_position_embeddings` (a sequence's input; its last token is a target only), a file that yields no full sequence (say how many tokens it yielded and how many one sequence needs),
// a JSON line that is not an object with a string "text" (name the line number), an unknown format; file errors as common/jsonl.h gives them.
// A document of only whitespace is skipped (not counted).
//
// Details:
//   - "Whitespace" is ASCII whitespace (space, \t, \n, \r, \f, \v).
//   - JSON lines: a blank line is skipped; a line that is not JSON is DATA_LOSS naming "path:line"
//     (as ReadJsonLines says it). Raw text: a line that is empty or holds only whitespace separates
//     paragraphs; a paragraph's lines are joined with "\n" (no "\n" after the last). One
//     paragraph is held in memory at a time, so a file without blank lines is held whole.
//   - The file is streamed line by line and must be a regular file (FAILED_PRECONDITION otherwise:
//     a FIFO would block, /dev/zero would never end). Reading stops after the document that
//     completes the max_sequences-th sequence; `documents` and `tokens` count what was read.
//   - The fingerprint hashes seq_len as 8 bytes little-endian, then each packed token (the N
//     sequences, not the dropped tail) as 4 bytes little-endian, in order.
//   - INVALID_ARGUMENT too for max_sequences < 0 and for a tokenizer without BOS or EOS ids.
StatusOr<TrainingData> LoadTrainingData(const TrainingDataOptions& options, const Tokenizer& tokenizer,
                                        int64_t max_position_embeddings);

// The sequence indices of global step `step` with `batch_size` sequences a step: epoch after epoch, each epoch a
// permutation of [0, N) seeded by (seed, epoch) (std::mt19937_64 + Fisher-Yates written out, not std::shuffle, whose
// algorithm is implementation-defined), so that any step's batch is computable alone (a resumed run needs no state
// but the step). A batch that crosses an epoch end takes the rest from the next epoch's permutation.
//
// Position p = step * batch_size + i (i < batch_size) is element p % N of epoch p / N's permutation.
// The generator is std::mt19937_64 seeded with std::seed_seq{seed's low and high 32 bits, epoch's
// low and high 32 bits}; Fisher-Yates runs i = N-1 down to 1, swapping element i with element
// j = r % (i + 1), r the first draw not below 2^64 mod (i + 1) (so that j is uniform). Both engines
// are specified exactly by the C++ standard, so every platform gives the same order.
// Empty when step < 0, batch_size < 1 or `data` holds no sequence.
std::vector<int64_t> BatchIndices(const TrainingData& data, int64_t step, int64_t batch_size);
// Rows [begin, end) of that batch's sequences as an int64 tensor [end - begin, seq_len + 1] (a rank of a data-parallel gang takes its slice; a micro-batch of gradient accumulation likewise).
// begin and end are clamped to [0, batch size] (end to at least begin), so an empty range gives [0, seq_len + 1].
torch::Tensor BatchSlice(const TrainingData& data, int64_t step, int64_t batch_size, int64_t begin, int64_t end);

}  // namespace dtm
