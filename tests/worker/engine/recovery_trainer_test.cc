// Recovery training on a small random Llama: AdamW against libtorch's own, the loss falling, the
// masks held exactly through a masked phase and released by an unmasked one, gradient accumulation,
// resuming from a checkpoint to the weights of an uninterrupted run, and the refusals.
#include "worker/engine/recovery_trainer.h"

#include <gmock/gmock.h>
#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "tests/worker/engine/test_models.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/training_memory.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// Sequences from a repetitive pattern (token t followed by t + 1, modulo the vocabulary), which a
// model can learn in a few steps, so that a falling loss says it learns.
TrainingData PatternData(int64_t sequences, int64_t seq_len, int64_t vocab) {
  TrainingData data;
  data.seq_len = seq_len;
  data.sequences = torch::empty({sequences, seq_len + 1}, torch::kInt32);
  for (int64_t s = 0; s < sequences; ++s) {
    for (int64_t k = 0; k <= seq_len; ++k) data.sequences[s][k] = static_cast<int32_t>((s * 7 + k) % vocab);
  }
  data.tokens = sequences * (seq_len + 1);
  data.seed = 5;
  data.fingerprint = "pattern-" + std::to_string(sequences) + "-" + std::to_string(seq_len);
  return data;
}

std::unique_ptr<LlamaModel> FreshModel() { return LlamaModel::RandomInit(testing::SmallConfig(), ModelOptions{}, 11); }

RecoveryTrainingOptions Options(std::vector<TrainingPhase> phases) {
  RecoveryTrainingOptions o;
  o.phases = std::move(phases);
  o.batch_size = 4;
  o.learning_rate = 3e-3;
  return o;
}

// Half the entries of two components zeroed by magnitude, as a round's pruning leaves them.
void Prune(LlamaModel& model) {
  torch::NoGradGuard no_grad;
  for (const char* name : {"model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight"}) {
    for (auto& [n, w] : model.NamedWeights()) {
      if (n != name) continue;
      torch::Tensor threshold = std::get<0>(w.abs().flatten().kthvalue(w.numel() / 2));
      w.masked_fill_(w.abs() <= threshold, 0);
    }
  }
}

std::map<std::string, torch::Tensor> Weights(const LlamaModel& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, w] : model.NamedWeights()) out[name] = w.detach().clone();
  return out;
}

class RecoveryTrainerTest : public ::testing::Test {
 protected:
  testing::TempDir temp_;
  const fs::path dir_ = temp_.path();
};

TEST(AdamWTest, MatchesLibtorchsAdamWExactly) {
  torch::manual_seed(3);
  std::vector<torch::Tensor> ours = {torch::randn({5, 3}), torch::randn({7})};
  std::vector<torch::Tensor> theirs;
  for (const torch::Tensor& p : ours) theirs.push_back(p.clone().requires_grad_(true));
  AdamWOptions options;
  options.beta2 = 0.99;
  options.weight_decay = 0.1;
  AdamW adamw(ours, options);
  torch::optim::AdamW reference(theirs, torch::optim::AdamWOptions(0.01).betas({0.9, 0.99}).eps(1e-8).weight_decay(0.1));
  for (int step = 0; step < 6; ++step) {
    std::vector<torch::Tensor> grads = {torch::randn({5, 3}), torch::randn({7})};
    for (size_t i = 0; i < grads.size(); ++i) theirs[i].mutable_grad() = grads[i].clone();
    reference.step();
    adamw.Step(grads, 0.01);
  }
  for (size_t i = 0; i < ours.size(); ++i) EXPECT_TRUE(torch::equal(ours[i], theirs[i].detach())) << "tensor " << i;
  EXPECT_EQ(adamw.steps(), 6);
}

TEST(TrainingPhasesTest, ParsesThePapersRoundAndRefusesTheRest) {
  StatusOr<std::vector<TrainingPhase>> phases = ParseTrainingPhases("masked:450,unmasked:50");
  ASSERT_TRUE(phases.ok()) << phases.status().ToString();
  ASSERT_EQ(phases->size(), 2u);
  EXPECT_TRUE((*phases)[0].masked);
  EXPECT_EQ((*phases)[0].steps, 450);
  EXPECT_FALSE((*phases)[1].masked);
  EXPECT_EQ((*phases)[1].steps, 50);
  for (const char* bad : {"", "masked", "masked:0", "masked:-3", "masked:1.5", "frozen:10", "masked:10,", "masked:9999999999999999999"}) {
    StatusOr<std::vector<TrainingPhase>> parsed = ParseTrainingPhases(bad);
    EXPECT_FALSE(parsed.ok()) << bad;
    EXPECT_EQ(parsed.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(RecoveryTrainerTest, TheLossFallsAsTheModelLearns) {
  std::unique_ptr<LlamaModel> model = FreshModel();
  TrainingData data = PatternData(32, 16, testing::SmallConfig().vocab_size);
  StatusOr<TrainingReport> report = TrainRecovery(*model, data, {}, Options({{false, 40}}));
  ASSERT_TRUE(report.ok()) << report.status().ToString();
  ASSERT_EQ(report->losses.size(), 40u);
  EXPECT_TRUE(report->finished);
  EXPECT_EQ(report->tokens_trained, 40 * 4 * 16);
  const double first = (report->losses[0] + report->losses[1]) / 2;
  const double last = (report->losses[38] + report->losses[39]) / 2;
  EXPECT_NEAR(first, std::log(97.0), 0.5);  // a random model: about uniform over the vocabulary
  EXPECT_LT(last, first / 2) << "first " << first << ", last " << last;
  for (const auto& [name, w] : model->NamedWeights()) EXPECT_FALSE(w.requires_grad()) << name;
}

TEST_F(RecoveryTrainerTest, AMaskedPhaseKeepsPrunedWeightsAtZeroAndAnUnmaskedOneReleasesThem) {
  std::unique_ptr<LlamaModel> model = FreshModel();
  Prune(*model);
  const std::map<std::string, torch::Tensor> masks = PruningMasksFromZeros(*model);
  ASSERT_EQ(masks.size(), 2u);
  const std::map<std::string, torch::Tensor> before = Weights(*model);
  TrainingData data = PatternData(32, 16, testing::SmallConfig().vocab_size);
  RecoveryTrainingOptions options = Options({{true, 6}, {false, 6}});
  options.stop_after = 6;  // the end of the masked phase
  ASSERT_TRUE(TrainRecovery(*model, data, masks, options).ok());
  for (const auto& [name, mask] : masks) {
    for (const auto& [n, weight] : model->NamedWeights()) {
      if (n != name) continue;
      EXPECT_EQ(weight.masked_select(mask.logical_not()).abs().max().item<float>(), 0.0f) << name;
      EXPECT_FALSE(torch::equal(weight.masked_select(mask), before.at(name).masked_select(mask))) << name << " trained";
    }
  }
  // The unmasked phase moves them.
  options.stop_after = 0;
  std::unique_ptr<LlamaModel> full = FreshModel();
  Prune(*full);
  ASSERT_TRUE(TrainRecovery(*full, data, masks, options).ok());
  for (const auto& [name, mask] : masks) {
    for (const auto& [n, weight] : full->NamedWeights()) {
      if (n == name) {
        EXPECT_GT(weight.masked_select(mask.logical_not()).abs().max().item<float>(), 0.0f) << name;
      }
    }
  }
}

TEST_F(RecoveryTrainerTest, GradientAccumulationComputesTheBatchMean) {
  TrainingData data = PatternData(16, 8, testing::SmallConfig().vocab_size);
  std::unique_ptr<LlamaModel> whole = FreshModel();
  std::unique_ptr<LlamaModel> accumulated = FreshModel();
  RecoveryTrainingOptions options = Options({{false, 5}});
  StatusOr<TrainingReport> a = TrainRecovery(*whole, data, {}, options);
  options.micro_batch = 1;
  StatusOr<TrainingReport> b = TrainRecovery(*accumulated, data, {}, options);
  ASSERT_TRUE(a.ok() && b.ok());
  for (size_t i = 0; i < a->losses.size(); ++i) EXPECT_NEAR(a->losses[i], b->losses[i], 1e-5 * a->losses[i]) << i;
  const std::map<std::string, torch::Tensor> wa = Weights(*whole), wb = Weights(*accumulated);
  // Within 1 % of the lr x steps AdamW can move a weight: its normalised update shows the rounding
  // of tiny gradients at that scale (gang_test measures it).
  const double tolerance = 0.01 * options.learning_rate * 5;
  for (const auto& [name, w] : wa) EXPECT_TRUE(torch::allclose(w, wb.at(name), /*rtol=*/0, tolerance)) << name;
}

TEST_F(RecoveryTrainerTest, ActivationCheckpointingGivesTheSameGradientsAndTheSameRun) {
  TrainingData data = PatternData(16, 8, testing::SmallConfig().vocab_size);
  // One backward pass: every parameter's gradient, with and without recomputing the layers.
  auto gradients = [&](bool checkpointing) {
    std::unique_ptr<LlamaModel> model = FreshModel();
    model->SetActivationCheckpointing(checkpointing);
    std::vector<torch::Tensor> params = model->Parameters();
    for (torch::Tensor& p : params) p.requires_grad_(true);
    torch::Tensor batch = BatchSlice(data, 0, 4, 0, 4);
    torch::Tensor logits = model->Logits(model->Forward(batch.slice(1, 0, 8)));
    torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}), batch.slice(1, 1, 9).reshape({-1}))
        .backward();
    std::vector<torch::Tensor> grads;
    for (torch::Tensor& p : params) {
      EXPECT_TRUE(p.grad().defined());
      grads.push_back(p.grad().clone());
      p.requires_grad_(false);
    }
    return grads;
  };
  const std::vector<torch::Tensor> plain = gradients(false), recomputed = gradients(true);
  ASSERT_EQ(plain.size(), recomputed.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_GT(plain[i].abs().max().item<float>(), 0.0f) << i;
    EXPECT_TRUE(torch::allclose(plain[i], recomputed[i], /*rtol=*/1e-6, /*atol=*/1e-9)) << "parameter " << i;
  }
  // A short run: the same losses and weights.
  std::unique_ptr<LlamaModel> a = FreshModel(), b = FreshModel();
  RecoveryTrainingOptions options = Options({{false, 4}});
  StatusOr<TrainingReport> ra = TrainRecovery(*a, data, {}, options);
  options.activation_checkpointing = true;
  StatusOr<TrainingReport> rb = TrainRecovery(*b, data, {}, options);
  ASSERT_TRUE(ra.ok() && rb.ok());
  for (size_t i = 0; i < ra->losses.size(); ++i) EXPECT_NEAR(ra->losses[i], rb->losses[i], 1e-6 * ra->losses[i]) << i;
  const std::map<std::string, torch::Tensor> wa = Weights(*a), wb = Weights(*b);
  const double tolerance = 0.01 * options.learning_rate * 4;  // as GradientAccumulationComputesTheBatchMean says
  for (const auto& [name, w] : wa) EXPECT_TRUE(torch::allclose(w, wb.at(name), /*rtol=*/0, tolerance)) << name;
}

TEST_F(RecoveryTrainerTest, BFloat16ComputeKeepsFloat32MasterWeightsAndTracksTheFloat32Run) {
  TrainingData data = PatternData(32, 16, testing::SmallConfig().vocab_size);
  std::unique_ptr<LlamaModel> exact = FreshModel(), mixed = FreshModel();
  RecoveryTrainingOptions options = Options({{false, 20}});
  StatusOr<TrainingReport> a = TrainRecovery(*exact, data, {}, options);
  options.compute_dtype = torch::kBFloat16;
  StatusOr<TrainingReport> b = TrainRecovery(*mixed, data, {}, options);
  ASSERT_TRUE(a.ok() && b.ok()) << b.status().ToString();
  // bfloat16 keeps 8 bits of mantissa: the first loss within 1 %, and not bit-equal (it did compute
  // in bfloat16); the run learns as the float32 one does.
  EXPECT_NEAR(b->losses[0], a->losses[0], 0.01 * a->losses[0]);
  EXPECT_NE(b->losses[0], a->losses[0]);
  EXPECT_LT(b->losses[19], 0.8 * b->losses[0]) << "float32: " << a->losses[0] << " -> " << a->losses[19];
  EXPECT_NEAR(b->losses[19], a->losses[19], 0.1 * a->losses[19]);
  for (const auto& [name, w] : mixed->NamedWeights()) EXPECT_EQ(w.scalar_type(), torch::kFloat32) << name;
  EXPECT_FALSE(at::autocast::is_cpu_enabled());  // the guard ended with the step
  options.compute_dtype = torch::kHalf;
  EXPECT_EQ(TrainRecovery(*mixed, data, {}, options).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RecoveryTrainerTest, AResumedRunEndsWithTheWeightsOfAnUninterruptedOne) {
  TrainingData data = PatternData(32, 16, testing::SmallConfig().vocab_size);
  std::unique_ptr<LlamaModel> straight = FreshModel();
  Prune(*straight);
  const std::map<std::string, torch::Tensor> masks = PruningMasksFromZeros(*straight);
  RecoveryTrainingOptions options = Options({{true, 5}, {false, 4}});
  StatusOr<TrainingReport> uninterrupted = TrainRecovery(*straight, data, masks, options);
  ASSERT_TRUE(uninterrupted.ok()) << uninterrupted.status().ToString();

  options.checkpoint_every = 2;
  options.checkpoint_dir = (dir_ / "ckpt").string();
  options.stop_after = 5;  // checkpoints at 2 and 4; step 5 is lost, as with a kill
  std::unique_ptr<LlamaModel> first = FreshModel();
  Prune(*first);
  StatusOr<TrainingReport> part = TrainRecovery(*first, data, masks, options);
  ASSERT_TRUE(part.ok()) << part.status().ToString();
  EXPECT_FALSE(part->finished);
  EXPECT_TRUE(fs::exists(dir_ / "ckpt" / "step-00000004"));
  EXPECT_FALSE(fs::exists(dir_ / "ckpt" / "step-00000002"));  // only the newest is kept

  options.stop_after = 0;
  std::unique_ptr<LlamaModel> resumed = FreshModel();  // the round's starting model, as a restarted worker loads it
  Prune(*resumed);
  StatusOr<TrainingReport> rest = TrainRecovery(*resumed, data, masks, options);
  ASSERT_TRUE(rest.ok()) << rest.status().ToString();
  EXPECT_EQ(rest->resumed_at, 4);
  EXPECT_TRUE(rest->finished);
  EXPECT_EQ(rest->losses, uninterrupted->losses);
  const std::map<std::string, torch::Tensor> a = Weights(*straight), b = Weights(*resumed);
  for (const auto& [name, w] : a) EXPECT_TRUE(torch::equal(w, b.at(name))) << name;

  // Another run's settings on the same folder are refused, naming the difference.
  options.learning_rate = 1e-3;
  StatusOr<TrainingReport> other = TrainRecovery(*FreshModel(), data, masks, options);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(other.status().message(), HasSubstr("learning_rate"));
}

TEST_F(RecoveryTrainerTest, RefusesOptionsThatCannotWork) {
  std::unique_ptr<LlamaModel> model = FreshModel();
  TrainingData data = PatternData(8, 8, testing::SmallConfig().vocab_size);
  auto message = [&](RecoveryTrainingOptions o, const std::map<std::string, torch::Tensor>& masks = {}) {
    StatusOr<TrainingReport> r = TrainRecovery(*model, data, masks, o);
    EXPECT_FALSE(r.ok());
    return r.ok() ? std::string() : r.status().message();
  };
  EXPECT_THAT(message(Options({})), HasSubstr("no phase"));
  RecoveryTrainingOptions o = Options({{false, 1}});
  o.micro_batch = 3;
  EXPECT_THAT(message(o), HasSubstr("must divide the batch"));
  o = Options({{false, 1}});
  o.schedule = "linear";
  EXPECT_THAT(message(o), HasSubstr("constant or cosine"));
  o = Options({{false, 1}});
  o.checkpoint_every = 1;
  EXPECT_THAT(message(o), HasSubstr("checkpoint folder"));
  EXPECT_THAT(message(Options({{true, 1}}), {{"model.layers.0.mlp.up_proj.weight", torch::ones({2, 2}, torch::kBool)}}),
              HasSubstr("another shape"));
  EXPECT_THAT(message(Options({{true, 1}}), {{"model.layers.9.mlp.up_proj.weight", torch::ones({2, 2}, torch::kBool)}}),
              HasSubstr("does not have"));
  TrainingData too_long = PatternData(2, testing::SmallConfig().max_position_embeddings + 1, 97);
  StatusOr<TrainingReport> r = TrainRecovery(*model, too_long, {}, Options({{false, 1}}));
  ASSERT_FALSE(r.ok());
  EXPECT_THAT(r.status().message(), HasSubstr("positions"));
}

TEST_F(RecoveryTrainerTest, TheTrainedModelIsWrittenWholeOrNotAtAll) {
  std::unique_ptr<LlamaModel> model = FreshModel();
  const std::string source = (dir_ / "source").string();
  fs::create_directories(source);
  std::ofstream(fs::path(source) / "tokenizer.json") << "{\"model\": {}}";
  const std::string out = (dir_ / "trained").string();
  StatusOr<std::string> fingerprint = WriteTrainedModel(*model, source, out);
  ASSERT_TRUE(fingerprint.ok()) << fingerprint.status().ToString();
  EXPECT_EQ(fingerprint->size(), 64u);
  EXPECT_TRUE(fs::exists(fs::path(out) / "tokenizer.json"));
  EXPECT_FALSE(fs::exists(out + ".partial"));
  StatusOr<std::unique_ptr<Checkpoint>> reopened = Checkpoint::Open(out);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->Fingerprint().value(), *fingerprint);
  // An existing model is never overwritten.
  StatusOr<std::string> again = WriteTrainedModel(*model, source, out);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.status().message(), HasSubstr("not an empty folder"));
}

// The memory plan's arithmetic: parameter counts as Hugging Face reports them for the paper's
// models, and each part by hand for 7B on 8 members.
TEST(TrainingMemoryTest, PlansThePapersModelsByHand) {
  EXPECT_EQ(LlamaParameterCount(Llama2_7bConfig()), 6'738'415'616);
  EXPECT_EQ(LlamaParameterCount(Llama2_13bConfig()), 13'015'864'320);
  TrainingMemoryOptions o;
  o.members = 8;
  const TrainingMemoryPlan p = PlanTrainingMemory(Llama2_7bConfig(), o);
  const double n = 6'738'415'616.0;
  EXPECT_DOUBLE_EQ(p.master_weights, 4 * n);
  EXPECT_DOUBLE_EQ(p.compute_weights, 2 * n);
  EXPECT_DOUBLE_EQ(p.gradients, 4 * n);
  EXPECT_DOUBLE_EQ(p.optimizer, 8 * n / 8);
  // 32 layer inputs of 2048 x 4096 in 16 bits, plus one layer's 2048 x 4096 x (34 + 5 x 32 x 2048 / 4096).
  EXPECT_DOUBLE_EQ(p.activations, 32.0 * 2 * 2048 * 4096 + 2048.0 * 4096 * (34 + 80));
  EXPECT_DOUBLE_EQ(p.logits, 2048.0 * 32000 * 8);
  o.shard_optimizer = false;
  o.checkpoint_activations = false;
  const TrainingMemoryPlan q = PlanTrainingMemory(Llama2_7bConfig(), o);
  EXPECT_DOUBLE_EQ(q.optimizer, 8 * n);
  EXPECT_DOUBLE_EQ(q.activations, 32.0 * 2048 * 4096 * (34 + 80));
}

}  // namespace
}  // namespace dtm
