// dtmctl's single-process commands: each runs the engine and prints one JSON document on stdout
// (progress goes to stderr), so other programs can check the numbers.
//
// Token files (probes, baselines, --calibration) are checked whole against config.json before the
// weights load (common/input_checks.h): a repeated or empty id, a token outside the vocabulary, a
// baseline whose rows differ in prefix_len or length (a baseline is G(F, y[:n], N) for one n and
// N) is INVALID_ARGUMENT naming the file and the row, and nothing is printed on stdout.
#pragma once

#include <cstdint>
#include <string>

#include "common/status.h"

namespace dtm::cli {

// Flags every model-running command shares.
struct RuntimeOptions {
  std::string device = "cpu";  // cpu | cuda | cuda:N | auto
  std::string dtype;           // empty: float32 on CPU, bfloat16 on GPU
  int64_t batch_size = 8;
  int threads = 0;             // 0: libtorch's default
};

struct MakeTinyModelOptions {
  std::string out_dir;
  std::string corpus_dir;
  int64_t steps = 400;
  int vocab_size = 2048;
  uint64_t seed = 20231;
  int threads = 0;
};
Status MakeTinyModelCommand(const MakeTinyModelOptions& options);

struct BrownTextOptions {
  std::string corpus_dir;
  std::string out;
  std::string split = "held-out";  // train | held-out | all (the tiny model holds out every 10th document)
};
Status BrownTextCommand(const BrownTextOptions& options);

struct MakeProbesOptions {
  std::string model_dir;
  std::string corpus;
  std::string format = "auto";
  int64_t count = 1000;
  int64_t prefix = 100;
  std::string sample = "first";  // first|random (worker/engine/probes.h)
  uint64_t seed = 0;             // --sample random only
  bool seed_given = false;       // --seed was on the command line
  std::string out;
};
Status MakeProbesCommand(const MakeProbesOptions& options);

struct BaselineOptions {
  std::string model_dir;
  std::string probes;
  int64_t completion = 500;
  std::string out;
  RuntimeOptions runtime;
};
// The file records the model's checkpoint fingerprint on every row (common/baseline_file.h).
Status BaselineCommand(const BaselineOptions& options);

// `--calibration baseline`: GPTQ calibrated on the evaluation baseline's own sequences.
inline constexpr char kCalibrateOnBaseline[] = "baseline";

struct EvalOptions {
  std::string model_dir;
  std::string baseline;
  std::string compress;      // COMPONENT=METHOD,...; empty: the uncompressed model
  // One config per line instead of --compress (blank lines and `#` comments skipped): each is scored
  // as --compress would score it and printed as one compact JSON line, in the file's order, with the
  // model, baseline and calibration loaded once.
  std::string compress_file;
  // Probe or baseline file for gptq, or kCalibrateOnBaseline; required for gptq (never a silent
  // default: calibrating on the scored sequences themselves flatters GPTQ).
  std::string calibration;
  int64_t calibration_count = 128;     // a job's calibration.count
  int64_t calibration_seq_len = 2048;  // a job's calibration.seq_len
  bool noise_floor = true;   // also evaluate the uncompressed model and report it beside the result
  RuntimeOptions runtime;
};
// Prints model_fingerprint and the baseline file's baseline_model_fingerprint (null when the file
// records none), and warns on stderr and in `warnings` when they differ: the metrics then compare two
// models, and the noise floor is --model against the other model's baseline, not that model's own
// (`dtmctl compare`, compare_command.h, reports both).
Status EvalCommand(const EvalOptions& options);

struct PerplexityOptions {
  std::string model_dir;
  std::string corpus;
  std::string format = "auto";
  int64_t count = 100;
  int64_t prefix = 100;
  int64_t completion = 500;
  RuntimeOptions runtime;
};
Status PerplexityCommand(const PerplexityOptions& options);

// `dtmctl ppl --text FILE`: ground-truth perplexity by the literature's protocol (SPEC `ppl`;
// worker/engine/perplexity_windows.h): the file's lines as rows joined by blank lines, one BOS,
// consecutive windows of `window` tokens, the last partial one dropped, every token of a window
// after its first scored. With `compress`, of the compressed model (applied as `eval` applies it).
struct TextPerplexityOptions {
  std::string model_dir;
  std::string text;          // raw text file (.gz ok)
  std::string join = "rows"; // rows: lines joined by blank lines (the protocol); as-is: the file's text unchanged
  int64_t window = 2048;     // W: 2 .. max_position_embeddings
  std::string compress;      // COMPONENT=METHOD,...; empty: the uncompressed model
  std::string compress_file; // one config per line instead, as EvalOptions::compress_file
  std::string calibration;   // probe or baseline file; required for gptq
  int64_t calibration_count = 128;     // cut as a job's calibration: set is (common/calibration_set.h)
  int64_t calibration_seq_len = 2048;
  RuntimeOptions runtime;
};
Status TextPerplexityCommand(const TextPerplexityOptions& options);

}  // namespace dtm::cli
