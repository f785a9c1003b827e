// train_bench: recovery training's figures (issue 14). First the memory plan of a training member
// for Llama-2-7B and 13B at 1, 4 and 8 GPUs (worker/engine/training_memory.h: arithmetic, no model
// needed); then measured training throughput on this machine: tokens/s and model FLOP utilisation
// (6 x parameters + 12 x layers x hidden x seq FLOPs a token, PaLM's count) against the float32 GEMM
// peak measured in the same run, for the tiny model's shape with 1 and 2 Gloo members (threads of
// this process on loopback, sharing its cores) and for one decoder layer of Llama-2-7B's shape.
//
//   train_bench [--steps N] [--skip-7b]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "worker/engine/gang.h"
#include "worker/engine/recovery_trainer.h"
#include "worker/engine/training_memory.h"

namespace {

using dtm::LlamaConfig;
using Clock = std::chrono::steady_clock;

double Gb(double bytes) { return bytes / 1e9; }

void PrintMemoryPlan() {
  std::printf("memory plan per GPU (GB), seq 2048, micro-batch 1, bf16 compute on float32 master weights, "
              "activation checkpointing per layer:\n");
  std::printf("%-6s %3s %-10s %8s %8s %8s %8s %8s %8s %8s\n", "model", "W", "optimizer", "master", "compute", "grads",
              "adamw", "activ.", "logits", "total");
  const std::pair<const char*, LlamaConfig> models[] = {{"7B", dtm::Llama2_7bConfig()}, {"13B", dtm::Llama2_13bConfig()}};
  for (const auto& [name, config] : models) {
    for (int64_t w : {1, 4, 8}) {
      for (bool shard : {false, true}) {
        if (w == 1 && shard) continue;
        dtm::TrainingMemoryOptions o;
        o.members = w;
        o.shard_optimizer = shard;
        const dtm::TrainingMemoryPlan p = dtm::PlanTrainingMemory(config, o);
        std::printf("%-6s %3lld %-10s %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f %8.1f\n", name, static_cast<long long>(w),
                    shard ? "ZeRO-1" : "replicated", Gb(p.master_weights), Gb(p.compute_weights), Gb(p.gradients),
                    Gb(p.optimizer), Gb(p.activations), Gb(p.logits), Gb(p.total()));
      }
    }
  }
  const dtm::TrainingMemoryPlan seven = dtm::PlanTrainingMemory(dtm::Llama2_7bConfig(), {});
  const dtm::TrainingMemoryPlan thirteen = dtm::PlanTrainingMemory(dtm::Llama2_13bConfig(), {});
  std::printf("parameters: 7B %.3e, 13B %.3e\n\n", static_cast<double>(seven.parameters),
              static_cast<double>(thirteen.parameters));
}

dtm::TrainingData RandomData(int64_t sequences, int64_t seq_len, int64_t vocab) {
  dtm::TrainingData data;
  data.seq_len = seq_len;
  data.sequences = torch::randint(0, vocab, {sequences, seq_len + 1}, torch::kInt32);
  data.fingerprint = "random";
  return data;
}

// Seconds of `steps` steps (after one warm-up step) on `members` gang members.
double TrainSeconds(const LlamaConfig& config, const dtm::TrainingData& data, int64_t batch, int64_t steps, int members) {
  auto run = [&](dtm::Gang* gang) {
    std::unique_ptr<dtm::LlamaModel> model = dtm::LlamaModel::RandomInit(config, dtm::ModelOptions{}, 3);
    dtm::RecoveryTrainingOptions o;
    o.batch_size = batch;
    o.gang = gang;
    o.phases = {{false, 1}};
    if (dtm::StatusOr<dtm::TrainingReport> warm = dtm::TrainRecovery(*model, data, {}, o); !warm.ok()) {
      std::fprintf(stderr, "train_bench: %s\n", warm.status().ToString().c_str());
      std::abort();
    }
    o.phases = {{false, steps}};
    const auto t0 = Clock::now();
    dtm::StatusOr<dtm::TrainingReport> r = dtm::TrainRecovery(*model, data, {}, o);
    if (!r.ok()) {
      std::fprintf(stderr, "train_bench: %s\n", r.status().ToString().c_str());
      std::abort();
    }
    return std::chrono::duration<double>(Clock::now() - t0).count();
  };
  if (members == 1) return run(nullptr);
  const int port = dtm::FreeLoopbackPort();
  auto member = [&](int rank) {
    dtm::GangOptions g;
    g.rank = rank;
    g.world_size = members;
    g.master_port = port;
    dtm::StatusOr<std::unique_ptr<dtm::Gang>> gang = dtm::Gang::Join(g);
    if (!gang.ok()) std::abort();
    return run(gang->get());
  };
  std::vector<std::future<double>> others;
  for (int r = 1; r < members; ++r) others.push_back(std::async(std::launch::async, member, r));
  double seconds = member(0);
  for (auto& f : others) seconds = std::max(seconds, f.get());
  return seconds;
}

void Measure(const char* name, const LlamaConfig& config, int64_t batch, int64_t seq_len, int64_t steps, int members,
             double gemm_flops) {
  const dtm::TrainingData data = RandomData(batch * 4, seq_len, config.vocab_size);
  const double seconds = TrainSeconds(config, data, batch, steps, members);
  const double tokens = static_cast<double>(batch * seq_len * steps);
  const double per_token = 6.0 * static_cast<double>(dtm::LlamaParameterCount(config)) +
                           12.0 * config.num_hidden_layers * config.hidden_size * seq_len;
  const double flops = per_token * tokens / seconds;
  std::printf("%-28s members %d  batch %lld x %lld  %8.0f tokens/s  %7.2f GFLOP/s  MFU %5.1f %%\n", name, members,
              static_cast<long long>(batch), static_cast<long long>(seq_len), tokens / seconds, flops / 1e9,
              100.0 * flops / gemm_flops);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  int64_t steps = 5;
  bool skip_7b = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--steps") == 0 && i + 1 < argc) steps = std::atoll(argv[++i]);
    else if (std::strcmp(argv[i], "--skip-7b") == 0) skip_7b = true;
    else {
      std::fprintf(stderr, "usage: train_bench [--steps N] [--skip-7b]\n");
      return 2;
    }
  }
  PrintMemoryPlan();
  std::fflush(stdout);
  const int64_t s = 2048;
  torch::Tensor a = torch::randn({s, s}), b = torch::randn({s, s});
  double best = 1e30;
  for (int r = 0; r < 3; ++r) {
    const auto t0 = Clock::now();
    torch::matmul(a, b);
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  const double gemm = 2.0 * s * s * s / best;
  std::printf("float32 GEMM peak %.1f GFLOP/s (%lld^3, best of 3), %d threads\n", gemm / 1e9,
              static_cast<long long>(s), at::get_num_threads());

  LlamaConfig tiny;
  tiny.vocab_size = 2048, tiny.hidden_size = 128, tiny.intermediate_size = 384, tiny.num_hidden_layers = 4;
  tiny.num_attention_heads = 4, tiny.num_key_value_heads = 2, tiny.max_position_embeddings = 1024;
  Measure("tiny model shape", tiny, 16, 256, steps, 1, gemm);
  Measure("tiny model shape", tiny, 16, 256, steps, 2, gemm);
  if (!skip_7b) {
    LlamaConfig layer = dtm::Llama2_7bConfig();
    layer.num_hidden_layers = 1;
    Measure("Llama-2-7B shape, 1 layer", layer, 2, 128, steps, 1, gemm);
  }
  return 0;
}
