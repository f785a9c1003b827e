// Engine benchmark: greedy generation and evaluation throughput, and model FLOP utilisation (the
// evaluation forward's achieved FLOP/s over the GEMM peak measured in the same run). Prints the
// figures as text and as one JSON line; never a timed test.
//
//   engine_bench [--model DIR | --synthetic tiny|llama2-7b] [--layers L] [--device cpu|cuda]
//                [--dtype float32|bfloat16|float16] [--batch B] [--prefix n] [--completion M]
//                [--gemm-size S] [--repeats R]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "worker/engine/checkpoint.h"
#include "worker/engine/divergence.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/tensor_util.h"

namespace {

using Clock = std::chrono::steady_clock;

struct BenchOptions {
  std::string model_dir;
  std::string synthetic = "tiny";
  int64_t layers = 0;  // 0: the model's own
  std::string device = "cpu";
  std::string dtype;
  int64_t batch = 8;
  int64_t prefix = 100;
  int64_t completion = 500;
  int64_t gemm_size = 0;  // 0: 2048 on CPU, 8192 on GPU
  int repeats = 3;
};

[[noreturn]] void Fail(const std::string& message) {
  std::fprintf(stderr, "engine_bench: error: %s\n", message.c_str());
  std::exit(1);
}

BenchOptions ParseArgs(int argc, char** argv) {
  BenchOptions o;
  std::map<std::string, std::string> flags;
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc) Fail(std::string("flag ") + argv[i] + " needs a value");
    flags[argv[i]] = argv[i + 1];
  }
  auto take = [&](const char* name, auto* field) {
    auto it = flags.find(name);
    if (it == flags.end()) return;
    if constexpr (std::is_same_v<std::decay_t<decltype(*field)>, std::string>) {
      *field = it->second;
    } else {
      *field = static_cast<std::decay_t<decltype(*field)>>(std::stoll(it->second));
    }
    flags.erase(it);
  };
  take("--model", &o.model_dir);
  take("--synthetic", &o.synthetic);
  take("--layers", &o.layers);
  take("--device", &o.device);
  take("--dtype", &o.dtype);
  take("--batch", &o.batch);
  take("--prefix", &o.prefix);
  take("--completion", &o.completion);
  take("--gemm-size", &o.gemm_size);
  take("--repeats", &o.repeats);
  if (!flags.empty()) Fail("unknown flag " + flags.begin()->first);
  return o;
}

dtm::LlamaConfig SyntheticConfig(const std::string& name) {
  dtm::LlamaConfig c;
  if (name == "tiny") {  // the shape of dtmctl make-tiny-model
    c.vocab_size = 2048, c.hidden_size = 128, c.intermediate_size = 384, c.num_hidden_layers = 4;
    c.num_attention_heads = 4, c.num_key_value_heads = 2;
  } else if (name == "llama2-7b") {
    c.vocab_size = 32000, c.hidden_size = 4096, c.intermediate_size = 11008, c.num_hidden_layers = 32;
    c.num_attention_heads = 32, c.num_key_value_heads = 32;
  } else {
    Fail("unknown --synthetic '" + name + "': tiny or llama2-7b");
  }
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  return c;
}

void Sync(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize();
}

template <typename F>
double BestSeconds(const torch::Device& device, int repeats, F&& f) {
  f();  // warm-up
  Sync(device);
  double best = 1e30;
  for (int r = 0; r < repeats; ++r) {
    auto t0 = Clock::now();
    f();
    Sync(device);
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// FLOPs of one evaluation forward of a [B, N] batch scoring M positions, counting the work the
// engine executes: every linear layer, the full T x T attention products, and lm_head on the
// M scored positions.
double EvalForwardFlops(const dtm::LlamaConfig& c, int64_t b, int64_t n, int64_t m) {
  const double d = c.hidden_size, hd = c.head_dim(), h = c.num_attention_heads, kvh = c.num_key_value_heads;
  const double linear = d * h * hd + 2 * d * kvh * hd + h * hd * d + 3 * d * c.intermediate_size;
  const double per_layer = 2 * n * linear + 2 * 2 * static_cast<double>(n) * n * h * hd;
  return b * (c.num_hidden_layers * per_layer + 2.0 * m * c.vocab_size * d);
}

}  // namespace

int main(int argc, char** argv) {
  BenchOptions o = ParseArgs(argc, argv);
  dtm::StatusOr<torch::Device> device = dtm::ParseDevice(o.device);
  if (!device.ok()) Fail(device.status().message());
  torch::ScalarType dtype = dtm::DefaultDTypeFor(*device);
  if (!o.dtype.empty()) {
    dtm::StatusOr<torch::ScalarType> parsed = dtm::ParseDType(o.dtype);
    if (!parsed.ok()) Fail(parsed.status().message());
    dtype = *parsed;
  }
  dtm::ModelOptions model_options{dtype, *device};

  std::unique_ptr<dtm::LlamaModel> model;
  std::string model_name;
  if (!o.model_dir.empty()) {
    auto checkpoint = dtm::Checkpoint::Open(o.model_dir);
    if (!checkpoint.ok()) Fail(checkpoint.status().message());
    auto loaded = dtm::LlamaModel::Load(**checkpoint, model_options);
    if (!loaded.ok()) Fail(loaded.status().message());
    model = std::move(*loaded);
    model_name = o.model_dir;
  } else {
    dtm::LlamaConfig config = SyntheticConfig(o.synthetic);
    if (o.layers > 0) config.num_hidden_layers = o.layers;
    model = dtm::LlamaModel::RandomInit(config, model_options, 1);
    model_name = "synthetic " + o.synthetic + " (" + std::to_string(config.num_hidden_layers) + " layers)";
  }
  const dtm::LlamaConfig& c = model->config();
  const int64_t n = o.prefix, m = o.completion, total = n + m;
  if (total > c.max_position_embeddings) Fail("prefix + completion exceeds the model's context");
  torch::NoGradGuard no_grad;
  auto int_opts = torch::TensorOptions().dtype(torch::kInt64);
  torch::Tensor prefix = torch::randint(3, c.vocab_size, {o.batch, n}, int_opts);
  torch::Tensor sequences = torch::randint(3, c.vocab_size, {o.batch, total}, int_opts).to(*device);

  // 1. GEMM peak in the compute dtype.
  const int64_t s = o.gemm_size > 0 ? o.gemm_size : (device->is_cuda() ? 8192 : 2048);
  torch::Tensor a = torch::randn({s, s}, torch::TensorOptions().dtype(torch::kFloat32)).to(*device, dtype);
  torch::Tensor bm = torch::randn({s, s}, torch::TensorOptions().dtype(torch::kFloat32)).to(*device, dtype);
  const double gemm_seconds = BestSeconds(*device, o.repeats, [&] { torch::matmul(a, bm); });
  const double gemm_flops = 2.0 * s * s * s / gemm_seconds;

  // 2. The evaluation forward: one pass over [B, n + M], argmax and log-softmax of M positions.
  const double eval_seconds = BestSeconds(*device, o.repeats, [&] {
    torch::Tensor hidden = model->Forward(sequences);
    torch::Tensor logits = model->Logits(hidden.slice(1, n - 1, total - 1));
    dtm::DivergenceFromLogits(logits, sequences.slice(1, n, total));
  });
  const double eval_flops = EvalForwardFlops(c, o.batch, total, m) / eval_seconds;

  // 3. Greedy generation with the KV cache.
  const double gen_seconds = BestSeconds(*device, std::max(1, o.repeats - 1), [&] { model->GenerateGreedy(prefix, m); });

  const double eval_tps = o.batch * total / eval_seconds;
  const double gen_tps = o.batch * m / gen_seconds;
  std::printf("model            %s on %s, %s, batch %lld, prefix %lld, completion %lld\n", model_name.c_str(),
              device->str().c_str(), dtm::DTypeName(dtype).c_str(), static_cast<long long>(o.batch),
              static_cast<long long>(n), static_cast<long long>(m));
  std::printf("gemm peak        %.2f TFLOP/s (%lldx%lld matmul, best of %d)\n", gemm_flops / 1e12,
              static_cast<long long>(s), static_cast<long long>(s), o.repeats);
  std::printf("evaluation       %.0f tokens/s (%.3f s per batch), %.2f TFLOP/s\n", eval_tps, eval_seconds, eval_flops / 1e12);
  std::printf("MFU (eval)       %.1f %% of the measured GEMM peak\n", 100.0 * eval_flops / gemm_flops);
  std::printf("generation       %.0f tokens/s (%.3f s for %lld x %lld tokens)\n", gen_tps, gen_seconds,
              static_cast<long long>(o.batch), static_cast<long long>(m));
  std::printf("{\"model\": \"%s\", \"device\": \"%s\", \"dtype\": \"%s\", \"batch\": %lld, \"prefix\": %lld, "
              "\"completion\": %lld, \"gemm_tflops\": %.4f, \"eval_tokens_per_s\": %.1f, \"eval_tflops\": %.4f, "
              "\"mfu\": %.4f, \"gen_tokens_per_s\": %.1f}\n",
              model_name.c_str(), device->str().c_str(), dtm::DTypeName(dtype).c_str(), static_cast<long long>(o.batch),
              static_cast<long long>(n), static_cast<long long>(m), gemm_flops / 1e12, eval_tps, eval_flops / 1e12,
              eval_flops / gemm_flops, gen_tps);
  return 0;
}
