// The engine-backed TaskExecutor against the engine called directly: a task's output must be exactly
// what GenerateBaseline / Evaluator::Evaluate give on the same rows, and bad tasks fail with the
// codes the Worker turns into retryable or permanent failures.
#include "worker/task_executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/components.h"
#include "tests/worker/engine/test_models.h"
#include "worker/engine/baseline.h"
#include "worker/engine/calibration.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/perplexity_windows.h"
#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

constexpr int64_t kPrefix = 6;
constexpr int64_t kCompletion = 20;
constexpr int64_t kProbes = 5;
constexpr uint32_t kShardBegin = 10;  // the shard is probes [10, 15) of some probe set
constexpr int64_t kBatch = 2;

class TaskExecutorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new testing::TempDir();
    std::unique_ptr<LlamaModel> model = testing::SmallModel();
    ASSERT_TRUE(WriteCheckpoint(dir_->File("model"), model->config(), model->NamedWeights()).ok());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(ModelDir());
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().ToString();
    StatusOr<std::string> fingerprint = (*checkpoint)->Fingerprint();
    ASSERT_TRUE(fingerprint.ok());
    fingerprint_ = *fingerprint;
    StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(**checkpoint, ModelOptions{});
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    reference_ = std::move(*model);
    torch::Tensor prefixes = testing::RandomPrefixes(kProbes, kPrefix, reference_->config().vocab_size, 5);
    for (int64_t i = 0; i < kProbes; ++i) {
      Probe p{"doc:" + std::to_string(i), {}};
      for (int64_t j = 0; j < kPrefix; ++j) p.tokens.push_back(static_cast<int32_t>(prefixes[i][j].item<int64_t>()));
      probes_.probes.push_back(p);
    }
  }

  static std::string ModelDir() { return dir_->File("model"); }

  std::unique_ptr<TaskExecutor> MakeExecutor() {
    EngineExecutorOptions options;
    options.model_path = ModelDir();
    options.batch_size = kBatch;
    double load_seconds = -1;
    StatusOr<std::unique_ptr<TaskExecutor>> executor = CreateEngineExecutor(options, &load_seconds);
    EXPECT_TRUE(executor.ok()) << executor.status().ToString();
    if (!executor.ok()) return nullptr;
    EXPECT_GE(load_seconds, 0);
    return std::move(*executor);
  }

  Baseline ReferenceBaseline() {
    GenerateOptions options;
    options.completion_len = kCompletion;
    options.batch_size = kBatch;
    StatusOr<Baseline> baseline = GenerateBaseline(*reference_, probes_, options);
    EXPECT_TRUE(baseline.ok()) << baseline.status().ToString();
    return *baseline;
  }

  dtm::v1::Task BaseTask(dtm::v1::TaskKind kind, const std::string& config) const {
    dtm::v1::Task task;
    task.set_task_id("t-1");
    task.set_lease_id("l-1");
    task.set_job_id("j-1");
    task.set_kind(kind);
    dtm::v1::CacheKey* key = task.mutable_key();
    key->set_model_fingerprint(fingerprint_);
    key->set_probe_set_fingerprint(probes_.Fingerprint());
    key->set_prefix_len(kPrefix);
    key->set_completion_len(kCompletion);
    key->set_dtype(dtm::v1::DTYPE_F32);
    key->mutable_config()->set_canonical(config);
    key->mutable_shard()->set_begin(kShardBegin);
    key->mutable_shard()->set_end(kShardBegin + kProbes);
    return task;
  }

  dtm::v1::Task BaselineTask() const {
    dtm::v1::Task task = BaseTask(dtm::v1::TASK_KIND_BASELINE_SHARD, "");
    for (size_t i = 0; i < probes_.probes.size(); ++i) {
      dtm::v1::BaselineRow* row = task.add_rows();
      row->set_probe_id(probes_.probes[i].id);
      row->set_probe_index(kShardBegin + static_cast<uint32_t>(i));
      row->set_prefix_len(kPrefix);
      for (int32_t t : probes_.probes[i].tokens) row->add_tokens(static_cast<uint32_t>(t));
    }
    return task;
  }

  dtm::v1::Task EvalTask(const Baseline& baseline, const std::string& config) const {
    dtm::v1::Task task = BaseTask(dtm::v1::TASK_KIND_EVAL_SHARD, config);
    for (size_t i = 0; i < baseline.rows.size(); ++i) {
      dtm::v1::BaselineRow* row = task.add_rows();
      row->set_probe_id(baseline.rows[i].id);
      row->set_probe_index(kShardBegin + static_cast<uint32_t>(i));
      row->set_prefix_len(kPrefix);
      for (int32_t t : baseline.rows[i].tokens) row->add_tokens(static_cast<uint32_t>(t));
    }
    return task;
  }

  // Evaluator::Evaluate on the reference replica, as `dtmctl eval` runs it.
  EvalResult ReferenceEval(const Baseline& baseline, const std::string& config_text,
                           CalibrationHessians* calibration = nullptr) {
    StatusOr<CompressionConfig> config = ParseCompressionConfig(config_text, 2);
    EXPECT_TRUE(config.ok()) << config.status().ToString();
    Evaluator evaluator(reference_.get(), calibration);
    EvalOptions options;
    options.batch_size = kBatch;
    StatusOr<EvalResult> result = evaluator.Evaluate(baseline, *config, options);
    EXPECT_TRUE(result.ok()) << result.status().ToString();
    return *result;
  }

  void ExpectSameResults(const dtm::v1::CompleteTaskRequest& request, const EvalResult& expected) {
    ASSERT_TRUE(request.has_eval());
    ASSERT_EQ(request.eval().results_size(), static_cast<int>(expected.per_probe.size()));
    for (int i = 0; i < request.eval().results_size(); ++i) {
      const dtm::v1::ProbeResult& got = request.eval().results(i);
      EXPECT_EQ(got.probe_id(), expected.ids[i]);
      EXPECT_EQ(got.probe_index(), kShardBegin + static_cast<uint32_t>(i));
      EXPECT_EQ(got.fdt(), static_cast<uint32_t>(expected.per_probe[i].fdt)) << "probe " << i;
      EXPECT_EQ(got.sdt(), static_cast<uint32_t>(expected.per_probe[i].sdt)) << "probe " << i;
      EXPECT_EQ(got.nll(), expected.per_probe[i].nll) << "probe " << i;  // bit-exact: same math, same batches
      EXPECT_EQ(got.outlier_columns(), static_cast<uint32_t>(expected.outlier_columns[i])) << "probe " << i;
    }
  }

  static testing::TempDir* dir_;
  std::string fingerprint_;
  std::unique_ptr<LlamaModel> reference_;
  ProbeSet probes_;
};

testing::TempDir* TaskExecutorTest::dir_ = nullptr;

TEST_F(TaskExecutorTest, DescribesTheLoadedReplica) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  EXPECT_EQ(executor->model_fingerprint(), fingerprint_);
  EXPECT_EQ(executor->dtype(), dtm::v1::DTYPE_F32);
  EXPECT_EQ(executor->num_layers(), 2);
  EXPECT_EQ(executor->device().type(), "cpu");
  EXPECT_GT(executor->device().memory_bytes(), 0u);
  EXPECT_GT(executor->device_memory_bytes(), 0u);
  EXPECT_EQ(executor->component_params().size(), 14u);  // 2 layers of 7
  EXPECT_EQ(executor->component_params().at("model.layers.1.mlp.up_proj"), 48u * 32u);
}

// The tiny model's architecture (TinyModelOptions' defaults, as in tiny-model/config.json) with
// random weights: the counts below are its shapes, without the tiny_model fixture's training run.
TEST_F(TaskExecutorTest, CountsEveryComponentsParametersOfTheTinyModel) {
  LlamaConfig config = testing::SmallConfig();
  config.vocab_size = 2048;
  config.hidden_size = 128;  // head_dim 32
  config.intermediate_size = 384;
  config.num_hidden_layers = 4;
  config.num_attention_heads = 4;
  config.num_key_value_heads = 2;
  std::unique_ptr<LlamaModel> model = LlamaModel::RandomInit(config, ModelOptions{}, 3);
  ASSERT_TRUE(WriteCheckpoint(dir_->File("tiny-architecture"), model->config(), model->NamedWeights()).ok());
  EngineExecutorOptions options;
  options.model_path = dir_->File("tiny-architecture");
  StatusOr<std::unique_ptr<TaskExecutor>> executor = CreateEngineExecutor(options, nullptr);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();

  const std::map<std::string, uint64_t> params = (*executor)->component_params();
  ASSERT_EQ(params.size(), 28u);
  std::vector<std::string> names;
  for (const auto& entry : params) names.push_back(entry.first);
  std::vector<std::string> expected_names;
  for (const ComponentId& id : AllComponents(4)) expected_names.push_back(id.Name());
  std::sort(expected_names.begin(), expected_names.end());
  EXPECT_EQ(names, expected_names);

  const std::map<std::string, uint64_t> per_kind = {
      {"self_attn.q_proj", 128 * 128}, {"self_attn.k_proj", 64 * 128}, {"self_attn.v_proj", 64 * 128},
      {"self_attn.o_proj", 128 * 128}, {"mlp.gate_proj", 384 * 128},   {"mlp.up_proj", 384 * 128},
      {"mlp.down_proj", 128 * 384}};
  for (int layer = 0; layer < 4; ++layer) {
    for (const auto& [suffix, count] : per_kind) {
      const std::string name = "model.layers." + std::to_string(layer) + "." + suffix;
      auto it = params.find(name);
      ASSERT_NE(it, params.end()) << name;
      EXPECT_EQ(it->second, count) << name;
    }
  }
  EXPECT_EQ(params.at("model.layers.0.self_attn.q_proj"), 16384u);
  EXPECT_EQ(params.at("model.layers.0.self_attn.k_proj"), 8192u);
  EXPECT_EQ(params.at("model.layers.3.mlp.down_proj"), 49152u);
}

TEST_F(TaskExecutorTest, BaselineTaskEqualsGenerateBaselineOnTheSameProbes) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  dtm::v1::CompleteTaskRequest request;
  const Status status = executor->Execute(BaselineTask(), &request);
  ASSERT_TRUE(status.ok()) << status.ToString();
  const Baseline expected = ReferenceBaseline();
  ASSERT_TRUE(request.has_baseline());
  ASSERT_EQ(request.baseline().rows_size(), kProbes);
  for (int i = 0; i < kProbes; ++i) {
    const dtm::v1::BaselineRow& row = request.baseline().rows(i);
    EXPECT_EQ(row.probe_id(), expected.rows[i].id);
    EXPECT_EQ(row.probe_index(), kShardBegin + static_cast<uint32_t>(i));
    EXPECT_EQ(row.prefix_len(), static_cast<uint32_t>(kPrefix));
    ASSERT_EQ(row.tokens_size(), kPrefix + kCompletion);
    std::vector<int32_t> tokens(row.tokens().begin(), row.tokens().end());
    EXPECT_EQ(tokens, expected.rows[i].tokens) << "probe " << i;
  }
  EXPECT_EQ(request.timing().tokens_processed(), static_cast<uint64_t>(kProbes * (kPrefix + kCompletion)));
}

TEST_F(TaskExecutorTest, EvalTaskEqualsEvaluatorPerProbeExactly) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  const Baseline baseline = ReferenceBaseline();
  // The compressed config first: the noise floor after it also shows the weights were restored.
  for (const std::string config :
       {"model.layers.0.mlp.up_proj=int8-absmax", "model.layers.1.self_attn.q_proj=prune:0.9",
        "model.layers.0.mlp.down_proj=llm-int8,model.layers.1.mlp.down_proj=llm-int8,model.layers.1.self_attn.q_proj=prune:0.9",
        ""}) {
    SCOPED_TRACE("config '" + config + "'");
    dtm::v1::CompleteTaskRequest request;
    const Status status = executor->Execute(EvalTask(baseline, config), &request);
    ASSERT_TRUE(status.ok()) << status.ToString();
    ExpectSameResults(request, ReferenceEval(baseline, config));
    if (!config.empty()) {
      // Otherwise the comparison could pass with a config that was never applied.
      int diverged = 0;
      for (const dtm::v1::ProbeResult& r : request.eval().results()) diverged += r.fdt() < kCompletion;
      EXPECT_GT(diverged, 0);
    }
    EXPECT_EQ(request.timing().tokens_processed(), static_cast<uint64_t>(kProbes * (kPrefix + kCompletion)));
  }
  // The uncompressed replica against its own baseline in float32: no divergence at all.
  dtm::v1::CompleteTaskRequest floor;
  ASSERT_TRUE(executor->Execute(EvalTask(baseline, ""), &floor).ok());
  for (const dtm::v1::ProbeResult& r : floor.eval().results()) EXPECT_EQ(r.fdt(), static_cast<uint32_t>(kCompletion));
}

// The first `count` baseline rows as a coordinator ships a calibration set (seq_len: a row's length).
CalibrationSequences CalibrationOf(const Baseline& baseline, size_t count) {
  CalibrationSequences set;
  set.seq_len = static_cast<int64_t>(baseline.rows[0].tokens.size());
  for (size_t i = 0; i < count; ++i) set.sequences.push_back(baseline.rows[i].tokens);
  set.fingerprint = CalibrationFingerprint(set.seq_len, set.sequences);
  return set;
}

dtm::v1::CalibrationSet ToProto(const CalibrationSequences& set) {
  dtm::v1::CalibrationSet out;
  out.set_fingerprint(set.fingerprint);
  out.set_seq_len(static_cast<uint32_t>(set.seq_len));
  for (const std::vector<int32_t>& s : set.sequences) {
    dtm::v1::TokenSequence* sequence = out.add_sequences();
    for (int32_t t : s) sequence->add_tokens(static_cast<uint32_t>(t));
  }
  return out;
}

// The executor runs a gptq task with the set its key names, as Evaluator::Evaluate does with that
// set; another set gives other numbers.
TEST_F(TaskExecutorTest, GptqRunsWithTheCalibrationSetTheKeyNames) {
  const Baseline baseline = ReferenceBaseline();
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  EXPECT_EQ(executor->calibration_fingerprint(), "");
  const std::string config = "model.layers.0.self_attn.q_proj=gptq:2,model.layers.1.mlp.down_proj=gptq:2";
  std::vector<std::vector<int32_t>> per_set;
  for (size_t count : {size_t{kProbes}, size_t{2}}) {
    const CalibrationSequences set = CalibrationOf(baseline, count);
    ASSERT_TRUE(executor->SetCalibration(ToProto(set)).ok());
    EXPECT_EQ(executor->calibration_fingerprint(), set.fingerprint);
    dtm::v1::Task task = EvalTask(baseline, config);
    task.mutable_key()->set_calibration_fingerprint(set.fingerprint);
    dtm::v1::CompleteTaskRequest request;
    const Status status = executor->Execute(task, &request);
    ASSERT_TRUE(status.ok()) << status.ToString();
    CalibrationHessians hessians(set, kBatch);
    ExpectSameResults(request, ReferenceEval(baseline, config, &hessians));
    std::vector<int32_t> sdt;
    for (const dtm::v1::ProbeResult& r : request.eval().results()) sdt.push_back(static_cast<int32_t>(r.sdt()));
    per_set.push_back(sdt);
  }
  // 2-bit GPTQ of two components calibrated on 5 or on 2 sequences: not the same weights.
  EXPECT_NE(per_set[0], per_set[1]);
}

// A gptq task whose set this executor does not hold may run elsewhere (or after a fetch); one whose
// key names no set can run nowhere.
TEST_F(TaskExecutorTest, GptqWithoutItsCalibrationSetIsRefused) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  const Baseline baseline = ReferenceBaseline();
  dtm::v1::Task task = EvalTask(baseline, "model.layers.0.mlp.up_proj=gptq:4");
  task.mutable_key()->set_calibration_fingerprint(CalibrationOf(baseline, 3).fingerprint);
  dtm::v1::CompleteTaskRequest request;
  Status status = executor->Execute(task, &request);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status.ToString();
  EXPECT_NE(status.message().find("this worker holds none"), std::string::npos) << status.message();
  ASSERT_TRUE(executor->SetCalibration(ToProto(CalibrationOf(baseline, 2))).ok());
  status = executor->Execute(task, &request);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status.ToString();
  task.mutable_key()->clear_calibration_fingerprint();
  status = executor->Execute(task, &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_NE(status.message().find("names no calibration set"), std::string::npos) << status.message();
  EXPECT_FALSE(request.has_eval());
}

// The rows' own faults come first: no worker could run such a task, calibration or not.
TEST_F(TaskExecutorTest, GptqTaskWithBadRowsIsInvalidArgumentEvenWithoutCalibration) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  dtm::v1::Task task = EvalTask(ReferenceBaseline(), "model.layers.0.mlp.up_proj=gptq:4");
  task.mutable_rows(1)->set_tokens(3, 97);
  dtm::v1::CompleteTaskRequest request;
  EXPECT_EQ(executor->Execute(task, &request).code(), StatusCode::kInvalidArgument);
}

// A coordinator that lies about a set, or ships one the model cannot read, is refused, and the set
// held before stays.
TEST_F(TaskExecutorTest, ACalibrationSetThatIsNotWhatItClaimsIsRefused) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  const Baseline baseline = ReferenceBaseline();
  const CalibrationSequences good = CalibrationOf(baseline, 2);
  ASSERT_TRUE(executor->SetCalibration(ToProto(good)).ok());

  dtm::v1::CalibrationSet forged = ToProto(CalibrationOf(baseline, 3));
  forged.mutable_sequences(1)->set_tokens(0, forged.sequences(1).tokens(0) == 5 ? 6 : 5);
  Status status = executor->SetCalibration(forged);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_NE(status.message().find("its content has fingerprint"), std::string::npos) << status.message();

  CalibrationSequences out_of_vocab = CalibrationOf(baseline, 2);
  out_of_vocab.sequences[1][4] = 97;  // the vocabulary is 0..96
  out_of_vocab.fingerprint = CalibrationFingerprint(out_of_vocab.seq_len, out_of_vocab.sequences);
  status = executor->SetCalibration(ToProto(out_of_vocab));
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_NE(status.message().find("holds token 97, outside the vocabulary of 97"), std::string::npos)
      << status.message();

  dtm::v1::CalibrationSet ragged = ToProto(good);
  ragged.mutable_sequences(0)->mutable_tokens()->RemoveLast();
  EXPECT_EQ(executor->SetCalibration(ragged).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(executor->calibration_fingerprint(), good.fingerprint);
}

TEST_F(TaskExecutorTest, OutOfVocabularyTokenIsInvalidArgumentNamingTheProbe) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  dtm::v1::CompleteTaskRequest request;

  dtm::v1::Task eval = EvalTask(ReferenceBaseline(), "model.layers.0.mlp.up_proj=int8-absmax");
  eval.mutable_rows(2)->set_tokens(kPrefix + 3, 97);  // the vocabulary is 0..96
  Status status = executor->Execute(eval, &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_EQ(status.message(), "task t-1: row 3 (id 'doc:2'): token id 97 at position " + std::to_string(kPrefix + 3) +
                                  " is outside the model's vocabulary of 97 ids (0..96)");
  EXPECT_FALSE(request.has_eval());

  dtm::v1::Task baseline = BaselineTask();
  baseline.mutable_rows(4)->set_tokens(1, 4000);
  status = executor->Execute(baseline, &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_EQ(status.message(),
            "task t-1: probe 5 (id 'doc:4'): token id 4000 at position 1 is outside the model's vocabulary of 97 ids "
            "(0..96)");
  EXPECT_FALSE(request.has_baseline());

  // The replica still serves: the next good task gives the reference's numbers.
  const Baseline reference = ReferenceBaseline();
  dtm::v1::CompleteTaskRequest good;
  ASSERT_TRUE(executor->Execute(EvalTask(reference, ""), &good).ok());
  ExpectSameResults(good, ReferenceEval(reference, ""));
}

TEST_F(TaskExecutorTest, DuplicateProbeIdsInATaskAreInvalidArgument) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  dtm::v1::Task task = EvalTask(ReferenceBaseline(), "");
  task.mutable_rows(3)->set_probe_id("doc:0");
  dtm::v1::CompleteTaskRequest request;
  const Status status = executor->Execute(task, &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_EQ(status.message(), "task t-1: row 4 (id 'doc:0') repeats the id of row 1; ids must be unique");
}

// SPEC `ppl`: a text-windows task's windows (of a model folder with a tokenizer) are exactly those
// `dtmctl ppl --text` scores: the text joined, tokenized once with BOS, cut, the tail dropped.
class TextWindowsTaskTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LlamaConfig config = testing::SmallConfig();
    config.vocab_size = 320;  // the test tokenizer's pieces
    std::unique_ptr<LlamaModel> model = testing::SmallModel(config);
    ASSERT_TRUE(WriteCheckpoint(dir_.path(), model->config(), model->NamedWeights()).ok());
    StatusOr<std::unique_ptr<Tokenizer>> tokenizer = testing::TinyTestTokenizer(dir_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    tokenizer_ = std::move(*tokenizer);
    StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(dir_.path());
    ASSERT_TRUE(checkpoint.ok()) << checkpoint.status().ToString();
    fingerprint_ = (*checkpoint)->Fingerprint().value();
  }

  std::unique_ptr<TaskExecutor> MakeExecutor(const std::string& model_path) {
    EngineExecutorOptions options;
    options.model_path = model_path;
    StatusOr<std::unique_ptr<TaskExecutor>> executor = CreateEngineExecutor(options, nullptr);
    EXPECT_TRUE(executor.ok()) << executor.status().ToString();
    return executor.ok() ? std::move(*executor) : nullptr;
  }

  dtm::v1::Task Task(const std::string& text, uint32_t window, const std::string& join) const {
    dtm::v1::Task task;
    task.set_task_id("t-ppl");
    task.set_kind(dtm::v1::TASK_KIND_TEXT_WINDOWS);
    task.mutable_key()->set_model_fingerprint(fingerprint_);
    task.mutable_key()->set_dtype(dtm::v1::DTYPE_F32);
    task.mutable_key()->set_prefix_len(1);
    task.mutable_key()->set_completion_len(window - 1);
    task.mutable_text_windows()->set_text(text);
    task.mutable_text_windows()->set_window(window);
    task.mutable_text_windows()->set_join(join);
    return task;
  }

  static std::string Text() {
    std::string text;
    for (int i = 0; i < 6; ++i) text += "the cat sat on the mat\n \nthe quick brown fox and the lazy dog\n";
    return text;
  }

  testing::TempDir dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::string fingerprint_;
};

TEST_F(TextWindowsTaskTest, CutsTheTextAsDtmctlPplDoes) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor(dir_.path());
  ASSERT_NE(executor, nullptr);
  for (const std::string join : {"rows", "as-is"}) {
    for (const uint32_t window : {8u, 13u}) {
      dtm::v1::CompleteTaskRequest request;
      const Status status = executor->Execute(Task(Text(), window, join), &request);
      ASSERT_TRUE(status.ok()) << status.ToString();
      const std::string joined = join == "rows" ? JoinLinesAsRows(Text()) : Text();
      StatusOr<PerplexityWindows> expected = PerplexityWindowsFromText(joined, *tokenizer_, window, "text");
      ASSERT_TRUE(expected.ok()) << expected.status().ToString();
      const dtm::v1::TextWindowsOutput& out = request.text_windows();
      EXPECT_EQ(out.text_tokens(), static_cast<uint64_t>(expected->text_tokens)) << join << " " << window;
      ASSERT_EQ(out.windows_size(), static_cast<int>(expected->windows.probes.size())) << join << " " << window;
      ASSERT_GT(out.windows_size(), 2);
      for (int w = 0; w < out.windows_size(); ++w) {
        const std::vector<int32_t>& tokens = expected->windows.probes[static_cast<size_t>(w)].tokens;
        EXPECT_EQ(std::vector<int32_t>(out.windows(w).tokens().begin(), out.windows(w).tokens().end()), tokens)
            << join << " " << window << " window " << w;
      }
    }
  }
  // The joins differ on this text (its whitespace-only lines become empty rows).
  EXPECT_NE(JoinLinesAsRows(Text()), Text());
}

TEST_F(TextWindowsTaskTest, TextsNoWorkerCanCutAreInvalidArgument) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor(dir_.path());
  ASSERT_NE(executor, nullptr);
  dtm::v1::CompleteTaskRequest request;
  Status status = executor->Execute(Task("the cat", 64, "rows"), &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_NE(status.message().find("t-ppl"), std::string::npos) << status.message();
  // The model's context is 128 tokens.
  std::string long_text;
  for (int i = 0; i < 40; ++i) long_text += Text();
  status = executor->Execute(Task(long_text, 200, "rows"), &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  dtm::v1::Task task = Task(Text(), 8, "rows");
  task.mutable_key()->set_completion_len(8);
  status = executor->Execute(task, &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
  EXPECT_NE(status.message().find("does not fit key"), std::string::npos) << status.message();
  status = executor->Execute(Task(Text(), 8, "lines"), &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
}

TEST_F(TextWindowsTaskTest, AModelFolderWithoutATokenizerIsThisWorkersFailedPrecondition) {
  std::filesystem::remove(dir_.File("tokenizer.json"));
  std::unique_ptr<TaskExecutor> executor = MakeExecutor(dir_.path());
  ASSERT_NE(executor, nullptr);
  dtm::v1::CompleteTaskRequest request;
  const Status status = executor->Execute(Task(Text(), 8, "rows"), &request);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition) << status.ToString();
  EXPECT_NE(status.message().find("cannot tokenize"), std::string::npos) << status.message();
}

TEST_F(TaskExecutorTest, ComponentTheModelLacksIsInvalidArgument) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  dtm::v1::CompleteTaskRequest request;
  const Status status =
      executor->Execute(EvalTask(ReferenceBaseline(), "model.layers.7.mlp.up_proj=int8-absmax"), &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("model.layers.7.mlp.up_proj"), std::string::npos) << status.message();
}

TEST_F(TaskExecutorTest, TaskForAnotherModelIsFailedPreconditionNamingBothFingerprints) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  dtm::v1::Task task = BaselineTask();
  task.mutable_key()->set_model_fingerprint("0123abcd");
  dtm::v1::CompleteTaskRequest request;
  const Status status = executor->Execute(task, &request);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("0123abcd"), std::string::npos) << status.message();
  EXPECT_NE(status.message().find(fingerprint_), std::string::npos) << status.message();
  EXPECT_FALSE(request.has_baseline());
}

TEST_F(TaskExecutorTest, TaskForAnotherDtypeIsFailedPrecondition) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  dtm::v1::Task task = BaselineTask();
  task.mutable_key()->set_dtype(dtm::v1::DTYPE_BF16);
  dtm::v1::CompleteTaskRequest request;
  const Status status = executor->Execute(task, &request);
  EXPECT_EQ(status.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("DTYPE_BF16"), std::string::npos) << status.message();
}

TEST_F(TaskExecutorTest, RowsInconsistentWithTheKeyAreInvalidArgument) {
  std::unique_ptr<TaskExecutor> executor = MakeExecutor();
  ASSERT_NE(executor, nullptr);
  const Baseline baseline = ReferenceBaseline();
  dtm::v1::CompleteTaskRequest request;

  dtm::v1::Task short_row = EvalTask(baseline, "");
  short_row.mutable_rows(2)->mutable_tokens()->RemoveLast();
  Status status = executor->Execute(short_row, &request);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("row 2"), std::string::npos) << status.message();

  dtm::v1::Task wrong_shard = BaselineTask();
  wrong_shard.mutable_key()->mutable_shard()->set_end(kShardBegin + kProbes + 1);
  EXPECT_EQ(executor->Execute(wrong_shard, &request).code(), StatusCode::kInvalidArgument);

  dtm::v1::Task out_of_vocab = BaselineTask();
  out_of_vocab.mutable_rows(0)->set_tokens(0, 5000);
  EXPECT_EQ(executor->Execute(out_of_vocab, &request).code(), StatusCode::kInvalidArgument);
}

TEST_F(TaskExecutorTest, UnreadableModelIsAnErrorNamingThePath) {
  EngineExecutorOptions options;
  options.model_path = dir_->File("no-such-model");
  StatusOr<std::unique_ptr<TaskExecutor>> executor = CreateEngineExecutor(options, nullptr);
  ASSERT_FALSE(executor.ok());
  EXPECT_EQ(executor.status().code(), StatusCode::kNotFound) << executor.status().ToString();
  EXPECT_NE(executor.status().message().find(options.model_path), std::string::npos);
}

}  // namespace
}  // namespace dtm
