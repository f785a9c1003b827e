// Writes the generated part of the seed corpus with dtm's own writers, so that the seeds are files
// exactly as the tiny model ships them (scripts/make_tiny_model.sh), only smaller:
//   hf_tokenizer_json/trained_bpe.json and sentencepiece_model/trained_bpe.model: a BpeModel trained
//     on a few sentences (vocab 300 instead of 2048), as MakeTinyModel writes it both ways;
//   model_config/tiny_model.json: the tiny model's config.json, as WriteCheckpoint writes it;
//   safetensors/tiny_shapes.safetensors: the tiny model's tensor names at toy shapes, through
//     WriteSafetensors, in each dtype class the reader converts from.
// Usage: fuzz_seed_writer CORPUS_DIR (fuzz/corpus). The other seeds are copies of examples/ and of
// test inputs, hand-written variants (other layouts of each format), and SentencePiece's own output:
// sentencepiece_model/spm_train_* from `spm_train --model_type=bpe --byte_fallback=true
// --normalization_rule_name=identity` (and a unigram model) over the same sentences.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "worker/engine/bpe_trainer.h"
#include "worker/engine/model_config.h"
#include "worker/engine/safetensors.h"
#include "worker/engine/sentencepiece_model.h"

namespace {

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
  if (!out) {
    std::perror(path.c_str());
    std::exit(1);
  }
}

void Check(const dtm::Status& status) {
  if (!status.ok()) {
    std::fprintf(stderr, "%s\n", status.ToString().c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];

  // Brown-like sentences, with the accents and digits that exercise byte fallback and split digits.
  const std::vector<std::string> texts = {
      "The Fulton County Grand Jury said Friday an investigation of recent primary elections produced no evidence.",
      "The jury further said in term-end presentments that the City Executive Committee deserves praise.",
      "It recommended that Fulton legislators act to have these laws studied and revised by 1962.",
      "A na\xC3\xAFve caf\xC3\xA9 owner served cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e to the jury.",
  };
  dtm::BpeTrainerOptions options;
  options.vocab_size = 300;
  const dtm::BpeModel bpe = dtm::BpeModel::Train(texts, options);
  WriteFile(dir + "/hf_tokenizer_json/trained_bpe.json", bpe.ToHfTokenizerJson());
  WriteFile(dir + "/sentencepiece_model/trained_bpe.model", dtm::SerializeSentencePieceModel(bpe.ToSentencePieceModel()));

  dtm::LlamaConfig config;  // trainer.cc's TinyConfig with TinyModelOptions' defaults
  config.vocab_size = 2048;
  config.hidden_size = 128;
  config.intermediate_size = 384;
  config.num_hidden_layers = 4;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  config.max_position_embeddings = 1024;
  config.rms_norm_eps = 1e-5;
  WriteFile(dir + "/model_config/tiny_model.json", config.ToJson().dump(2) + "\n");

  torch::manual_seed(1);
  const std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"model.embed_tokens.weight", torch::randn({6, 4})},
      {"model.layers.0.self_attn.q_proj.weight", torch::randn({4, 4}).to(torch::kBFloat16)},
      {"model.layers.0.input_layernorm.weight", torch::ones({4}).to(torch::kFloat16)},
      {"model.layers.0.mlp.down_proj.weight", torch::randn({4, 2}).to(torch::kFloat64)},
      {"model.norm.weight", torch::arange(4, torch::kInt64)},
      {"lm_head.weight", torch::randint(-100, 100, {6, 4}).to(torch::kInt8)},
      {"empty", torch::empty({0, 4})},
      {"scalar_flag", torch::tensor(true)},
  };
  Check(dtm::WriteSafetensors(dir + "/safetensors/tiny_shapes.safetensors", tensors, {{"format", "pt"}}));
  return 0;
}
