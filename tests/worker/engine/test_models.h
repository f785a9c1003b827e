// Small random Llama models and temporary folders for engine tests.
#pragma once

#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/calibration_set.h"
#include "worker/engine/baseline.h"
#include "worker/engine/bpe_trainer.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/model_config.h"
#include "worker/engine/tokenizer.h"

namespace dtm::testing {

// 2 layers, grouped-query attention (4 heads, 2 kv heads), untied, vocab 97.
inline LlamaConfig SmallConfig() {
  LlamaConfig c;
  c.vocab_size = 97;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = false;
  return c;
}

inline std::unique_ptr<LlamaModel> SmallModel(const LlamaConfig& config = SmallConfig(), uint64_t seed = 7) {
  // A larger init than HF's 0.02 so that the logits are peaked and argmax is well separated.
  std::unique_ptr<LlamaModel> model = LlamaModel::RandomInit(config, ModelOptions{}, seed);
  torch::NoGradGuard no_grad;
  for (auto& [name, w] : model->NamedWeights()) {
    if (w.dim() == 2) w.mul_(10.0);
  }
  return model;
}

// Random prefixes [B, n] of ids in [3, vocab).
inline torch::Tensor RandomPrefixes(int64_t b, int64_t n, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> id(3, vocab - 1);
  torch::Tensor out = torch::empty({b, n}, torch::kInt64);
  for (int64_t i = 0; i < b * n; ++i) out.data_ptr<int64_t>()[i] = id(rng);
  return out;
}

// `probes` random prefixes of `prefix` tokens (seeded), completed greedily by `completion` tokens
// in batches of `batch_size`; ids p0, p1, ...
inline Baseline RandomBaseline(LlamaModel& model, int64_t probes, int64_t prefix, int64_t completion, uint64_t seed,
                               int64_t batch_size) {
  ProbeSet set;
  torch::Tensor prefixes = RandomPrefixes(probes, prefix, model.config().vocab_size, seed);
  for (int64_t i = 0; i < probes; ++i) {
    Probe p{"p" + std::to_string(i), {}};
    for (int64_t j = 0; j < prefix; ++j) p.tokens.push_back(static_cast<int32_t>(prefixes[i][j].item<int64_t>()));
    set.probes.push_back(p);
  }
  GenerateOptions options;
  options.completion_len = completion;
  options.batch_size = batch_size;
  StatusOr<Baseline> baseline = GenerateBaseline(model, set, options);
  if (!baseline.ok()) throw std::runtime_error("RandomBaseline: " + baseline.status().ToString());
  return *baseline;
}

// A baseline's whole rows as a GPTQ calibration set.
inline CalibrationSequences CalibrationOfBaseline(const Baseline& baseline) {
  CalibrationSequences set;
  set.seq_len = static_cast<int64_t>(baseline.rows[0].tokens.size());
  for (const BaselineRow& row : baseline.rows) set.sequences.push_back(row.tokens);
  set.fingerprint = CalibrationFingerprint(set.seq_len, set.sequences);
  return set;
}

// A fresh empty folder under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() / ("dtm-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string path() const { return path_.string(); }
  std::string File(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

// A BPE tokenizer of 320 pieces trained on two short sentences, written to DIR/tokenizer.json and
// read back as HF's tokenizer.json: what the probe and perplexity-window tests cut text with.
inline StatusOr<std::unique_ptr<Tokenizer>> TinyTestTokenizer(const TempDir& dir) {
  const std::vector<std::string> texts = {"the cat sat on the mat and the dog sat on the log",
                                          "a quick brown fox jumps over the lazy dog again and again"};
  BpeTrainerOptions options;
  options.vocab_size = 320;
  RETURN_IF_ERROR(BpeModel::Train(texts, options).WriteHfTokenizerJson(dir.File("tokenizer.json")));
  return Tokenizer::FromHfJsonFile(dir.File("tokenizer.json"));
}

}  // namespace dtm::testing
