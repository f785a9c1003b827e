// dtmctl's single-process commands: each runs the engine and prints one JSON document on stdout
// (progress goes to stderr), so other programs can check the numbers.
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
Status BaselineCommand(const BaselineOptions& options);

struct EvalOptions {
  std::string model_dir;
  std::string baseline;
  std::string compress;      // COMPONENT=METHOD,...; empty: the uncompressed model
  std::string calibration;   // probe or baseline file for gptq; default: the baseline's sequences
  int64_t calibration_count = 128;
  bool noise_floor = true;   // also evaluate the uncompressed model and report it beside the result
  RuntimeOptions runtime;
};
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

}  // namespace dtm::cli
