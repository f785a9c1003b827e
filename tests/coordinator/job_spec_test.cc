#include "coordinator/job_spec.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace dtm {
namespace {

using ::testing::HasSubstr;

constexpr char kEvaluateSpec[] = R"(name: int8 sweep
kind: evaluate
model: build/tiny-model
dtype: bfloat16
probes: build/tiny-model/probes.jsonl.gz
num_probes: 200
prefix: 20
completion: 40
shard_size: 25
priority: -3
noise_floor: false
calibration:
  probes: build/calibration.jsonl
  count: 64
  seq_len: 512
evaluate:
  configs:
    - model.layers.1.mlp.up_proj=int8-absmax, model.layers.0.self_attn.q_proj=prune:0.50
    - model.layers.0.mlp.down_proj=gptq:4:g128
)";

// A minimal spec with `line` appended at the top level (after the required fields).
std::string EvaluateWith(const std::string& line) {
  return "kind: evaluate\nmodel: m\nprobes: p.jsonl\n" + line +
         "\nevaluate:\n  configs: [model.layers.0.mlp.up_proj=int8-absmax]\n";
}

std::string ProbeSpec(const std::string& section) {
  return "kind: probe\nmodel: m\nprobes: p.jsonl\nprobe:\n" + section;
}

// Expects an INVALID_ARGUMENT whose message holds every one of `parts`.
void ExpectInvalid(const std::string& yaml, const std::vector<std::string>& parts) {
  StatusOr<JobSpec> spec = ParseJobSpec(yaml);
  ASSERT_FALSE(spec.ok()) << "accepted:\n" << yaml;
  EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument) << spec.status().ToString();
  for (const std::string& part : parts) EXPECT_THAT(spec.status().message(), HasSubstr(part)) << yaml;
}

TEST(JobSpecTest, ALoneCommaIsRefusedInsteadOfHangingTheParser) {
  // yaml-cpp 0.7's LoadAll never returns on this input (found by fuzz/job_spec_fuzzer).
  for (const std::string text : {",", ",\n,", "kind: evaluate\n,"}) {
    StatusOr<JobSpec> spec = ParseJobSpec(text);
    EXPECT_FALSE(spec.ok()) << text;
    EXPECT_EQ(spec.status().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(JobSpecTest, ParsesEveryFieldOfAnEvaluateJob) {
  StatusOr<JobSpec> spec = ParseJobSpec(kEvaluateSpec);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->name, "int8 sweep");
  EXPECT_EQ(spec->kind, JobKind::kEvaluate);
  EXPECT_EQ(spec->model, "build/tiny-model");
  EXPECT_EQ(spec->dtype, "bfloat16");
  EXPECT_EQ(spec->probes, "build/tiny-model/probes.jsonl.gz");
  EXPECT_EQ(spec->num_probes, 200);
  EXPECT_EQ(spec->prefix_len, 20);
  EXPECT_EQ(spec->completion_len, 40);
  EXPECT_EQ(spec->shard_size, 25);
  EXPECT_EQ(spec->priority, -3);
  EXPECT_FALSE(spec->noise_floor);
  EXPECT_EQ(spec->calibration, "build/calibration.jsonl");
  EXPECT_EQ(spec->calibration_count, 64);
  EXPECT_EQ(spec->calibration_seq_len, 512);
  EXPECT_TRUE(SpecUsesGptq(*spec));
  // Canonical: sorted by component name, blanks dropped, fractions in their shortest form.
  EXPECT_EQ(spec->configs,
            (std::vector<std::string>{
                "model.layers.0.self_attn.q_proj=prune:0.5,model.layers.1.mlp.up_proj=int8-absmax",
                "model.layers.0.mlp.down_proj=gptq:4:g128"}));
  EXPECT_TRUE(spec->methods.empty());
  EXPECT_TRUE(spec->components.empty());
}

// SPEC, gptq: the calibration set is part of every gptq result, so a job that uses gptq names one.
TEST(JobSpecTest, AGptqJobNeedsACalibrationSetAndOthersDoNot) {
  const std::string gptq_eval = "kind: evaluate\nmodel: m\nprobes: p.jsonl\nevaluate:\n  configs: "
                                "[model.layers.0.mlp.up_proj=gptq:4]\n";
  ExpectInvalid(gptq_eval, {"calibration: missing", "gptq needs a calibration set"});
  ExpectInvalid(ProbeSpec("  methods: [int8-absmax, gptq:8]\n"), {"calibration: missing"});
  ExpectInvalid("kind: quant-search\nmodel: m\nprobes: p.jsonl\nquant-search:\n  method: gptq:4\n",
                {"calibration: missing"});

  StatusOr<JobSpec> spec = ParseJobSpec(gptq_eval + "calibration: {probes: c.jsonl}\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->calibration, "c.jsonl");
  EXPECT_EQ(spec->calibration_count, 128);  // SPEC's default: 128 x 2048 tokens
  EXPECT_EQ(spec->calibration_seq_len, 2048);

  // Without gptq the section is allowed and unused.
  spec = ParseJobSpec(EvaluateWith("calibration: {probes: c.jsonl}"));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_FALSE(SpecUsesGptq(*spec));

  ExpectInvalid(EvaluateWith("calibration: {count: 4}"), {"calibration.probes", "missing"});
  ExpectInvalid(EvaluateWith("calibration: {probes: c.jsonl, seq_len: 0}"), {"calibration.seq_len", "at least 1"});
  ExpectInvalid(EvaluateWith("calibration: {probes: c.jsonl, tokens: 4}"), {"calibration.tokens", "unknown field"});
  ExpectInvalid(EvaluateWith("calibration: {probes: c.jsonl, count: 4096, seq_len: 4096}"),
                {"4096 x 4096 tokens is more than a calibration set may hold"});
}

TEST(JobSpecTest, AQuantSearchNamesItsRankingMetric) {
  const std::string head = "kind: quant-search\nmodel: m\nprobes: p.jsonl\nquant-search:\n";
  StatusOr<JobSpec> spec = ParseJobSpec(head + "  beam: 2\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->rank_by, "fdt75");
  spec = ParseJobSpec(head + "  rank_by: dppl\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->rank_by, "dppl");
  ExpectInvalid(head + "  rank_by: sdt\n", {"quant-search.rank_by (line 5)", "must be fdt75, dppl or ppl"});
  // Ranking by ppl needs the text whose perplexity ranks the nodes.
  ExpectInvalid(head + "  rank_by: ppl\n", {"quant-search.rank_by: ppl", "`ppl:` text", "missing"});
  spec = ParseJobSpec(head + "  rank_by: ppl\nppl: {text: wiki.test.raw, window: 256}\n");
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->rank_by, "ppl");
}

// SPEC `ppl`: any job may compute every config's ground-truth perplexity on a text.
TEST(JobSpecTest, APplSectionNamesTheTextAndHowToCutIt) {
  StatusOr<JobSpec> spec = ParseJobSpec(EvaluateWith(""));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->ppl_text, "");  // no ppl unless asked for
  spec = ParseJobSpec(EvaluateWith("ppl: {text: data/wiki.test.raw}"));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->ppl_text, "data/wiki.test.raw");
  EXPECT_EQ(spec->ppl_window, 2048);  // the literature's protocol
  EXPECT_EQ(spec->ppl_join, "rows");
  EXPECT_EQ(spec->ppl_shard_size, 8);
  spec = ParseJobSpec(EvaluateWith("ppl: {text: t.txt.gz, window: 256, join: as-is, shard_size: 3}"));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->ppl_window, 256);
  EXPECT_EQ(spec->ppl_join, "as-is");
  EXPECT_EQ(spec->ppl_shard_size, 3);
  ExpectInvalid(EvaluateWith("ppl: {window: 256}"), {"ppl.text", "missing"});
  ExpectInvalid(EvaluateWith("ppl: {text: t.txt, window: 1}"), {"ppl.window", "at least 2"});
  ExpectInvalid(EvaluateWith("ppl: {text: t.txt, join: lines}"), {"ppl.join", "must be rows or as-is"});
  ExpectInvalid(EvaluateWith("ppl: {text: t.txt, shard_size: 0}"), {"ppl.shard_size", "at least 1"});
  ExpectInvalid(EvaluateWith("ppl: {text: t.txt, stride: 512}"), {"ppl.stride", "unknown field"});
  ExpectInvalid(EvaluateWith("ppl: wiki.test.raw"), {"ppl"});
}

// The shipped examples (the paper's experiments as jobs) are specs a coordinator accepts.
TEST(JobSpecTest, EveryExampleSpecParses) {
  const char* source = std::getenv("DTM_SOURCE_DIR");
  ASSERT_NE(source, nullptr) << "DTM_SOURCE_DIR is set by CTest";
  int examples = 0, with_ppl = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(source) / "examples")) {
    if (entry.path().extension() != ".yaml") continue;
    std::ifstream file(entry.path());
    std::stringstream text;
    text << file.rdbuf();
    StatusOr<JobSpec> spec = ParseJobSpec(text.str());
    ASSERT_TRUE(spec.ok()) << entry.path() << ": " << spec.status().ToString();
    ++examples;
    if (!spec->ppl_text.empty()) ++with_ppl;
  }
  EXPECT_GE(examples, 10);
  EXPECT_GE(with_ppl, 4);  // Fig. 2 and Table 1's three arms
}

TEST(JobSpecTest, AppliesDefaultsForOmittedFields) {
  StatusOr<JobSpec> spec = ParseJobSpec(EvaluateWith(""));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->name, "");
  EXPECT_EQ(spec->dtype, "");
  EXPECT_EQ(spec->num_probes, 0);
  EXPECT_EQ(spec->prefix_len, 100);
  EXPECT_EQ(spec->completion_len, 500);
  EXPECT_EQ(spec->shard_size, 50);
  EXPECT_EQ(spec->priority, 0);
  EXPECT_TRUE(spec->noise_floor);
  EXPECT_EQ(spec->configs, std::vector<std::string>{"model.layers.0.mlp.up_proj=int8-absmax"});
}

TEST(JobSpecTest, ParsesAProbeJobWithCanonicalMethods) {
  StatusOr<JobSpec> spec = ParseJobSpec("calibration: {probes: c.jsonl}\n" + ProbeSpec(
      "  methods: [int8-absmax, 'prune:0.50', gptq:3]\n  components: ['model.layers.*.mlp.*', '*q_proj']\n"));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, JobKind::kProbe);
  EXPECT_EQ(spec->methods, (std::vector<std::string>{"int8-absmax", "prune:0.5", "gptq:3"}));
  EXPECT_EQ(spec->components, (std::vector<std::string>{"model.layers.*.mlp.*", "*q_proj"}));
  EXPECT_TRUE(spec->configs.empty());
}

TEST(JobSpecTest, ReadsIntegersAsDecimalAndBooleansInYamlSpellings) {
  StatusOr<JobSpec> spec = ParseJobSpec(EvaluateWith("shard_size: 010\nnoise_floor: no"));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->shard_size, 10);  // not octal 8
  EXPECT_FALSE(spec->noise_floor);
}

std::string TrainSpec(const std::string& section) {
  return "kind: train\nmodel: m\ntrain:\n  data: c4.jsonl.gz\n  output: out\n" + section;
}

TEST(JobSpecTest, ATrainJobHasItsSectionAndNoProbes) {
  StatusOr<JobSpec> spec = ParseJobSpec(TrainSpec(
      "  phases: masked:450,unmasked:50\n  batch: 256\n  micro_batch: 4\n  seq_len: 2048\n  lr: 1e-4\n"
      "  warmup: 10\n  schedule: cosine\n  weight_decay: 0.01\n  clip: 1.0\n  seed: 7\n  workers: 8\n"
      "  checkpoint_every: 25\n  shard_optimizer: true\n  timeout_seconds: 600\n  format: jsonl\n"
      "  checkpoint_dir: ckpt\n  max_sequences: 128000\n"
      "  prune: 'model.layers.1.mlp.up_proj=prune:0.70, model.layers.0.self_attn.q_proj=prune:0.3'\n"
      "  remask: true\n"));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, JobKind::kTrain);
  EXPECT_TRUE(spec->probes.empty());
  const dtm::TrainSpec& t = spec->train;
  EXPECT_EQ(t.data, "c4.jsonl.gz");
  EXPECT_EQ(t.output, "out");
  EXPECT_EQ(t.checkpoint_dir, "ckpt");
  EXPECT_EQ(t.phases, "masked:450,unmasked:50");
  EXPECT_EQ(t.batch, 256);
  EXPECT_EQ(t.micro_batch, 4);
  EXPECT_EQ(t.seq_len, 2048);
  EXPECT_EQ(t.max_sequences, 128000);
  EXPECT_DOUBLE_EQ(t.learning_rate, 1e-4);
  EXPECT_EQ(t.warmup, 10);
  EXPECT_EQ(t.schedule, "cosine");
  EXPECT_DOUBLE_EQ(t.weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(t.clip, 1.0);
  EXPECT_EQ(t.seed, 7);
  EXPECT_EQ(t.workers, 8);
  EXPECT_EQ(t.checkpoint_every, 25);
  EXPECT_TRUE(t.shard_optimizer);
  EXPECT_EQ(t.timeout_seconds, 600);
  EXPECT_EQ(t.data_format, "jsonl");
  EXPECT_EQ(t.prune, "model.layers.0.self_attn.q_proj=prune:0.3,model.layers.1.mlp.up_proj=prune:0.7");  // canonical
  EXPECT_TRUE(t.remask);
  EXPECT_EQ(ToProto(JobKind::kTrain), dtm::v1::JOB_KIND_TRAIN);
  EXPECT_EQ(ParseJobKind("train").value(), JobKind::kTrain);
  // The paper's round is the default.
  StatusOr<JobSpec> defaults = ParseJobSpec(TrainSpec(""));
  ASSERT_TRUE(defaults.ok()) << defaults.status().ToString();
  EXPECT_EQ(defaults->train.phases, "masked:450,unmasked:50");
  EXPECT_DOUBLE_EQ(defaults->train.weight_decay, 0.01);
  EXPECT_EQ(defaults->train.workers, 1);
  EXPECT_FALSE(defaults->train.remask);
  EXPECT_TRUE(defaults->train.prune.empty());
}

std::string SparsifySpec(const std::string& sparsify, const std::string& train = "  workers: 2\n") {
  return "kind: sparsify\nmodel: m\nprobes: p.jsonl\nsparsify:\n  output: run\n" + sparsify +
         "train:\n  data: c4.jsonl.gz\n" + train;
}

TEST(JobSpecTest, ASparsifyRunHasItsRoundsAndTheirTraining) {
  StatusOr<JobSpec> spec = ParseJobSpec(SparsifySpec(
      "  schedule: [0.3, 0.2, 0.1]\n  allocation: uniform\n  components: ['*.mlp.*']\n  probe_at: [0.5, 1, 1.5]\n"
      "  previous: r.json\n",
      "  workers: 2\n  phases: masked:4,unmasked:2\n"));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  EXPECT_EQ(spec->kind, JobKind::kSparsify);
  EXPECT_EQ(spec->sparsify_output, "run");
  EXPECT_EQ(spec->schedule, (std::vector<double>{0.3, 0.2, 0.1}));
  EXPECT_TRUE(spec->uniform_allocation);
  EXPECT_EQ(spec->components, std::vector<std::string>{"*.mlp.*"});
  EXPECT_EQ(spec->probe_multiples, (std::vector<double>{0.5, 1, 1.5}));
  EXPECT_EQ(spec->previous, "r.json");
  EXPECT_EQ(spec->train.data, "c4.jsonl.gz");
  EXPECT_EQ(spec->train.workers, 2);
  EXPECT_EQ(spec->train.phases, "masked:4,unmasked:2");
  EXPECT_TRUE(spec->train.output.empty());  // each round's
  EXPECT_EQ(ToProto(JobKind::kSparsify), dtm::v1::JOB_KIND_SPARSIFY);
  EXPECT_EQ(ParseJobKind("sparsify").value(), JobKind::kSparsify);
  // The paper's schedule, allocation and probe points by default.
  StatusOr<JobSpec> defaults = ParseJobSpec(SparsifySpec(""));
  ASSERT_TRUE(defaults.ok()) << defaults.status().ToString();
  EXPECT_EQ(defaults->schedule, (std::vector<double>{0.20, 0.15, 0.10, 0.10, 0.05, 0.05, 0.05, 0.05}));
  EXPECT_FALSE(defaults->uniform_allocation);
  EXPECT_EQ(defaults->probe_multiples, (std::vector<double>{0.5, 1.5}));
  EXPECT_EQ(defaults->train.phases, "masked:450,unmasked:50");
}

TEST(JobSpecTest, RejectsBadSparsifyRunsNamingTheField) {
  ExpectInvalid(SparsifySpec("  schedule: [0.6, 0.4]\n"), {"sparsify.schedule (line 6)", "sums to 100%"});
  ExpectInvalid(SparsifySpec("  schedule: [0.2, -0.1]\n"), {"sparsify.schedule[1]", "(0, 1)", "'-0.1'"});
  ExpectInvalid(SparsifySpec("  schedule: []\n"), {"sparsify.schedule", "1 to 64 steps"});
  ExpectInvalid(SparsifySpec("  allocation: greedy\n"), {"sparsify.allocation", "balanced or uniform", "'greedy'"});
  ExpectInvalid(SparsifySpec("  step: 0.1\n"), {"sparsify", "unknown field"});
  ExpectInvalid(SparsifySpec("", "  output: out\n"), {"train.output", "set by each round"});
  ExpectInvalid(SparsifySpec("", "  prune: 'model.layers.0.mlp.up_proj=prune:0.5'\n"), {"train.prune", "set by each round"});
  ExpectInvalid(SparsifySpec("", "  remask: true\n"), {"train.remask", "set by each round"});
  ExpectInvalid("kind: sparsify\nmodel: m\nprobes: p.jsonl\nsparsify:\n  schedule: [0.1]\ntrain:\n  data: d\n",
                {"sparsify.output", "missing"});
  ExpectInvalid("kind: sparsify\nmodel: m\nprobes: p.jsonl\nsparsify:\n  output: run\n", {"train: missing"});
  ExpectInvalid("kind: sparsify\nmodel: m\nsparsify:\n  output: run\ntrain:\n  data: d\n", {"probes: missing"});
  ExpectInvalid("reference: r\n" + SparsifySpec(""), {"reference", "leave it out"});
  // A train job keeps its own section only.
  ExpectInvalid(TrainSpec("") + "sparsify:\n  output: run\n", {"sparsify", "does not match kind 'train'"});
}

TEST(JobSpecTest, RejectsBadTrainSpecsNamingTheField) {
  ExpectInvalid("kind: train\nmodel: m\ntrain:\n  output: out\n", {"train.data", "missing"});
  ExpectInvalid("kind: train\nmodel: m\ntrain:\n  data: d\n", {"train.output", "missing"});
  ExpectInvalid("kind: train\nmodel: m\n", {"job spec: train: missing"});
  ExpectInvalid("kind: train\nmodel: m\nprobes: p.jsonl\ntrain: {data: d, output: o}\n",
                {"probes (line 3)", "does not apply to kind train"});
  ExpectInvalid(TrainSpec("  phases: masked:0\n"), {"train.phases", "positive integer"});
  ExpectInvalid(TrainSpec("  phases: pruned:10\n"), {"train.phases", "masked:STEPS or unmasked:STEPS"});
  ExpectInvalid(TrainSpec("  batch: 10\n  workers: 4\n"), {"train.batch", "must divide among the 4 workers"});
  ExpectInvalid(TrainSpec("  batch: 8\n  workers: 2\n  micro_batch: 3\n"), {"train.micro_batch", "(4)"});
  ExpectInvalid(TrainSpec("  shard_optimizer: true\n"), {"train.shard_optimizer", "workers of 2 or more"});
  ExpectInvalid(TrainSpec("  schedule: linear\n"), {"train.schedule", "constant or cosine"});
  ExpectInvalid(TrainSpec("  lr: 0\n"), {"train.lr", "positive"});
  ExpectInvalid(TrainSpec("  weight_decay: -0.1\n"), {"train.weight_decay", "negative"});
  ExpectInvalid(TrainSpec("  workers: 0\n"), {"train.workers", "at least 1"});
  ExpectInvalid(TrainSpec("  seq_len: 0\n"), {"train.seq_len", "at least 1"});
  ExpectInvalid(TrainSpec("  format: parquet\n"), {"train.format", "auto, jsonl or text"});
  ExpectInvalid(TrainSpec("  steps: 10\n"), {"steps", "unknown field"});
  ExpectInvalid(TrainSpec("  prune: model.layers.0.mlp.up_proj=int8-absmax\n"),
                {"train.prune", "training prunes by magnitude only"});
  ExpectInvalid(TrainSpec("  prune: model.layers.0.mlp.up=prune:0.5\n"), {"train.prune", "model.layers.0.mlp.up"});
  ExpectInvalid(TrainSpec("  prune: ''\n"), {"train.prune", "must not be empty"});
}

TEST(JobSpecTest, NamesKindsAndMapsThemToProto) {
  EXPECT_EQ(JobKindName(JobKind::kEvaluate), "evaluate");
  EXPECT_EQ(JobKindName(JobKind::kProbe), "probe");
  EXPECT_EQ(JobKindName(JobKind::kQuantSearch), "quant-search");
  EXPECT_EQ(JobKindName(JobKind::kSparsifyRound), "sparsify-round");
  EXPECT_EQ(ToProto(JobKind::kEvaluate), dtm::v1::JOB_KIND_EVALUATE);
  EXPECT_EQ(ToProto(JobKind::kProbe), dtm::v1::JOB_KIND_PROBE);
  EXPECT_EQ(ToProto(JobKind::kQuantSearch), dtm::v1::JOB_KIND_QUANT_SEARCH);
  EXPECT_EQ(ToProto(JobKind::kSparsifyRound), dtm::v1::JOB_KIND_SPARSIFY_ROUND);
  for (JobKind k : {JobKind::kEvaluate, JobKind::kProbe, JobKind::kQuantSearch, JobKind::kSparsifyRound}) {
    StatusOr<JobKind> back = ParseJobKind(JobKindName(k));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, k);
  }
  EXPECT_FALSE(ParseJobKind("quant_search").ok());
  EXPECT_EQ(DtypeToProto(""), dtm::v1::DTYPE_UNSPECIFIED);
  EXPECT_EQ(DtypeToProto("float32"), dtm::v1::DTYPE_F32);
  EXPECT_EQ(DtypeToProto("float16"), dtm::v1::DTYPE_F16);
  EXPECT_EQ(DtypeToProto("bfloat16"), dtm::v1::DTYPE_BF16);
}

TEST(JobSpecTest, RejectsMalformedYamlWithLineAndColumn) {
  ExpectInvalid("kind: evaluate\nmodel: [m\nprobes: p\n", {"malformed YAML at line", "column"});
  ExpectInvalid("kind: evaluate\n  model: m\n", {"malformed YAML at line 2"});
}

TEST(JobSpecTest, RejectsDocumentsThatAreNotOneMapping) {
  ExpectInvalid("", {"job spec: empty"});
  ExpectInvalid("# only a comment\n", {"job spec: empty"});
  ExpectInvalid("- kind: evaluate\n", {"top level (line 1)", "must be a mapping", "a list"});
  ExpectInvalid(EvaluateWith("") + "---\nkind: probe\n", {"more than one YAML document", "expected one"});
}

TEST(JobSpecTest, RejectsUnknownAndUnsupportedKinds) {
  ExpectInvalid("kind: evaluat\nmodel: m\nprobes: p\n",
                {"kind (line 1)", "unknown kind 'evaluat'", "evaluate, probe"});
  ExpectInvalid("kind: quant_search\nmodel: m\nprobes: p\n", {"unknown kind 'quant_search'"});
  ExpectInvalid("kind: quant-search\nmodel: m\nprobes: p\nquant_search: {beam: 10}\n",
                {"quant_search (line 4)", "unknown field"});
  ExpectInvalid("kind: sparsify-round\nmodel: m\nprobes: p\n", {"job spec: sparsify-round: missing"});
  ExpectInvalid("kind: [evaluate]\nmodel: m\nprobes: p\n", {"kind (line 1)", "must be a string, got a list"});
}

TEST(JobSpecTest, RejectsUnknownFieldsNamingFieldAndLine) {
  ExpectInvalid(EvaluateWith("shard_sise: 10"),
                {"job spec: shard_sise (line 4): unknown field", "shard_size"});
  ExpectInvalid(
      "kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs: [model.layers.0.mlp.up_proj=llm-int8]\n"
      "  config: [x]\n",
      {"evaluate.config (line 6): unknown field; expected one of configs"});
  ExpectInvalid(ProbeSpec("  methods: [llm-int8]\n  component: ['*']\n"),
                {"probe.component (line 6): unknown field"});
}

TEST(JobSpecTest, RejectsAFieldGivenTwice) {
  ExpectInvalid(EvaluateWith("prefix: 10\nprefix: 20"), {"prefix (line 5): given twice (first on line 4)"});
}

TEST(JobSpecTest, RejectsMissingRequiredFields) {
  ExpectInvalid("model: m\nprobes: p\n", {"job spec: kind: missing"});
  ExpectInvalid("kind: evaluate\nprobes: p\nevaluate: {configs: [model.layers.0.mlp.up_proj=llm-int8]}\n",
                {"job spec: model: missing"});
  ExpectInvalid("kind: evaluate\nmodel: m\nevaluate: {configs: [model.layers.0.mlp.up_proj=llm-int8]}\n",
                {"job spec: probes: missing"});
  ExpectInvalid("kind: evaluate\nmodel: m\nprobes: p\n", {"job spec: evaluate: missing"});
  ExpectInvalid("kind: probe\nmodel: m\nprobes: p\n", {"job spec: probe: missing"});
  ExpectInvalid("kind: evaluate\nmodel: m\nprobes: p\nevaluate: {}\n",
                {"evaluate.configs (line 4): missing"});
  ExpectInvalid(ProbeSpec("  components: ['*']\n"), {"probe.methods (line 5): missing"});
  ExpectInvalid("kind: evaluate\nmodel: ''\nprobes: p\n", {"model (line 2): must not be empty"});
}

TEST(JobSpecTest, RejectsASectionOfAnotherKind) {
  ExpectInvalid(EvaluateWith("probe: {methods: [llm-int8]}"),
                {"probe (line 4): section does not match kind 'evaluate'"});
}

TEST(JobSpecTest, RejectsOutOfRangeNumbers) {
  ExpectInvalid(EvaluateWith("shard_size: 0"), {"job spec: shard_size (line 4): must be at least 1, got 0"});
  ExpectInvalid(EvaluateWith("prefix: 0"), {"job spec: prefix (line 4): must be at least 1, got 0"});
  ExpectInvalid(EvaluateWith("completion: -5"),
                {"job spec: completion (line 4): must be at least 1, got -5"});
  ExpectInvalid(EvaluateWith("num_probes: -1"),
                {"job spec: num_probes (line 4): must be at least 0, got -1"});
  ExpectInvalid(EvaluateWith("shard_size: 99999999999"), {"shard_size (line 4): must be at most 2147483647"});
  ExpectInvalid(EvaluateWith("priority: 3000000000"), {"priority (line 4): must be at most"});
}

TEST(JobSpecTest, RejectsValuesOfTheWrongType) {
  ExpectInvalid(EvaluateWith("shard_size: abc"),
                {"job spec: shard_size (line 4): must be an integer, got 'abc'"});
  ExpectInvalid(EvaluateWith("prefix: 1.5"), {"prefix (line 4): must be an integer, got '1.5'"});
  ExpectInvalid(EvaluateWith("prefix: 0x10"), {"prefix (line 4): must be an integer, got '0x10'"});
  ExpectInvalid(EvaluateWith("completion: [1]"), {"completion (line 4): must be an integer, got a list"});
  ExpectInvalid(EvaluateWith("noise_floor: maybe"),
                {"noise_floor (line 4): must be true or false, got 'maybe'"});
  ExpectInvalid(EvaluateWith("name: {a: 1}"), {"name (line 4): must be a string, got a mapping"});
  ExpectInvalid(EvaluateWith("dtype: fp16"),
                {"dtype (line 4): must be one of float32, float16, bfloat16, got 'fp16'"});
  ExpectInvalid(EvaluateWith("dtype:"), {"job spec: dtype (line 4): has no value"});
  ExpectInvalid(
      "kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs: model.layers.0.mlp.up_proj=llm-int8\n",
      {"evaluate.configs (line 5): must be a list of strings"});
  ExpectInvalid("kind: evaluate\nmodel: m\nprobes: p\nevaluate: [a]\n",
                {"evaluate (line 4): must be a mapping"});
}

TEST(JobSpecTest, RejectsBadConfigsNamingTheItem) {
  ExpectInvalid(
      "kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs:\n    - "
      "model.layers.0.mlp.up_proj=llm-int8\n"
      "    - model.layers.0.mlp.upproj=int8-absmax\n",
      {"evaluate.configs[1] (line 7)", "unknown component 'model.layers.0.mlp.upproj'"});
  ExpectInvalid("kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs: [model.layers.0.mlp.up_proj]\n",
                {"evaluate.configs[0] (line 5)", "missing '='"});
  ExpectInvalid(
      "kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs: [model.layers.0.mlp.up_proj=int4]\n",
      {"evaluate.configs[0] (line 5)", "unknown compression method 'int4'"});
  ExpectInvalid("kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs: []\n",
                {"evaluate.configs (line 5): must list at least one config", "`reference`"});
  // With a reference, an empty list is the model as it is against it: config "" alone.
  StatusOr<JobSpec> alone = ParseJobSpec("kind: evaluate\nmodel: m\nreference: r\nprobes: p\nevaluate:\n  configs: []\n");
  ASSERT_TRUE(alone.ok()) << alone.status().ToString();
  EXPECT_EQ(ExpandConfigs(*alone, 2).value(), std::vector<std::string>{""});
  ExpectInvalid("kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs: ['  ']\n",
                {"evaluate.configs[0] (line 5): empty config", "noise_floor"});
}

TEST(JobSpecTest, RejectsBadMethodsAndGlobs) {
  ExpectInvalid(ProbeSpec("  methods: [int8-absmax, 'prune:1.5']\n"),
                {"probe.methods[1] (line 5)", "fraction 1.5 is outside [0, 1]"});
  ExpectInvalid(ProbeSpec("  methods: [gptq:5]\n"),
                {"probe.methods[0] (line 5)", "bits 5 is not one of 2, 3, 4, 8"});
  ExpectInvalid(ProbeSpec("  methods: []\n"), {"probe.methods (line 5): must list at least one method"});
  ExpectInvalid(ProbeSpec("  methods: [llm-int8]\n  components: ['']\n"),
                {"probe.components[0] (line 6): must not be empty"});
  ExpectInvalid(ProbeSpec("  methods: [llm-int8]\n  components:\n"),
                {"probe.components (line 6): has no value"});
}

JobSpec ParsedOrDie(const std::string& yaml) {
  StatusOr<JobSpec> spec = ParseJobSpec(yaml);
  EXPECT_TRUE(spec.ok()) << spec.status().ToString();
  return spec.ok() ? *spec : JobSpec{};
}

TEST(ExpandConfigsTest, ProbesEveryComponentUnderEveryMethodInOrder) {
  JobSpec spec = ParsedOrDie(ProbeSpec("  methods: [int8-absmax, 'prune:0.25']\n"));
  StatusOr<std::vector<std::string>> configs = ExpandConfigs(spec, 3);
  ASSERT_TRUE(configs.ok()) << configs.status().ToString();
  ASSERT_EQ(configs->size(), 7u * 3 * 2);
  EXPECT_EQ(configs->front(), "model.layers.0.self_attn.q_proj=int8-absmax");
  EXPECT_EQ((*configs)[6], "model.layers.0.mlp.down_proj=int8-absmax");
  EXPECT_EQ((*configs)[7], "model.layers.1.self_attn.q_proj=int8-absmax");
  EXPECT_EQ((*configs)[21], "model.layers.0.self_attn.q_proj=prune:0.25");
  EXPECT_EQ(configs->back(), "model.layers.2.mlp.down_proj=prune:0.25");
}

TEST(ExpandConfigsTest, FiltersComponentsByGlobsKeepingModelOrder) {
  JobSpec spec = ParsedOrDie(ProbeSpec(
      "  methods: [llm-int8]\n  components: ['model.layers.1.self_attn.[qk]_proj', '*.mlp.down_proj']\n"));
  StatusOr<std::vector<std::string>> configs = ExpandConfigs(spec, 2);
  ASSERT_TRUE(configs.ok()) << configs.status().ToString();
  EXPECT_EQ(*configs, (std::vector<std::string>{
                          "model.layers.0.mlp.down_proj=llm-int8",
                          "model.layers.1.self_attn.q_proj=llm-int8",
                          "model.layers.1.self_attn.k_proj=llm-int8",
                          "model.layers.1.mlp.down_proj=llm-int8",
                      }));

  spec = ParsedOrDie("calibration: {probes: c.jsonl}\n" +
                     ProbeSpec("  methods: [llm-int8, gptq:4]\n  components: ['model.layers.?.mlp.*']\n"));
  configs = ExpandConfigs(spec, 12);  // layers 10 and 11 do not match '?'
  ASSERT_TRUE(configs.ok()) << configs.status().ToString();
  EXPECT_EQ(configs->size(), 10u * 3 * 2);
}

TEST(ExpandConfigsTest, RejectsAGlobThatMatchesNoComponent) {
  JobSpec spec = ParsedOrDie(
      ProbeSpec("  methods: [llm-int8]\n  components: ['*.mlp.*', 'model.layers.4.*', '*.mlp.up']\n"));
  StatusOr<std::vector<std::string>> configs = ExpandConfigs(spec, 4);
  ASSERT_FALSE(configs.ok());
  EXPECT_EQ(configs.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(configs.status().message(), HasSubstr("probe.components[1] 'model.layers.4.*'"));
  EXPECT_THAT(configs.status().message(), HasSubstr("with 4 layers"));
  EXPECT_TRUE(ExpandConfigs(spec, 5).ok() == false);  // '*.mlp.up' matches nothing either
}

TEST(ExpandConfigsTest, DropsDuplicateConfigsKeepingTheFirst) {
  JobSpec spec = ParsedOrDie(
      ProbeSpec("  methods: ['prune:0.5', llm-int8, 'prune:0.50']\n  components: ['*.0.mlp.up_proj']\n"));
  StatusOr<std::vector<std::string>> configs = ExpandConfigs(spec, 1);
  ASSERT_TRUE(configs.ok()) << configs.status().ToString();
  EXPECT_EQ(*configs, (std::vector<std::string>{"model.layers.0.mlp.up_proj=prune:0.5",
                                                "model.layers.0.mlp.up_proj=llm-int8"}));

  spec = ParsedOrDie(
      "kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs:\n"
      "    - model.layers.1.mlp.up_proj=llm-int8,model.layers.0.mlp.up_proj=llm-int8\n"
      "    - model.layers.0.mlp.up_proj=llm-int8\n"
      "    - model.layers.0.mlp.up_proj=llm-int8 , model.layers.1.mlp.up_proj=llm-int8\n");
  configs = ExpandConfigs(spec, 2);
  ASSERT_TRUE(configs.ok()) << configs.status().ToString();
  EXPECT_EQ(*configs, (std::vector<std::string>{
                          "model.layers.0.mlp.up_proj=llm-int8,model.layers.1.mlp.up_proj=llm-int8",
                          "model.layers.0.mlp.up_proj=llm-int8"}));
}

TEST(ExpandConfigsTest, RejectsAnEvaluateConfigBeyondTheModelNamingIt) {
  JobSpec spec = ParsedOrDie(
      "kind: evaluate\nmodel: m\nprobes: p\nevaluate:\n  configs:\n    - "
      "model.layers.1.mlp.up_proj=llm-int8\n"
      "    - model.layers.7.self_attn.v_proj=int8-absmax\n");
  StatusOr<std::vector<std::string>> configs = ExpandConfigs(spec, 4);
  ASSERT_FALSE(configs.ok());
  EXPECT_EQ(configs.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(configs.status().message(),
              HasSubstr("evaluate.configs[1] 'model.layers.7.self_attn.v_proj=int8-absmax'"));
  EXPECT_THAT(configs.status().message(), HasSubstr("layer 7 out of range, the model has 4 layers"));

  configs = ExpandConfigs(spec, 8);
  ASSERT_TRUE(configs.ok()) << configs.status().ToString();
  EXPECT_EQ(configs->size(), 2u);
}

TEST(ExpandConfigsTest, RejectsAModelWithoutLayersAndUnsupportedKinds) {
  JobSpec spec = ParsedOrDie(EvaluateWith(""));
  EXPECT_FALSE(ExpandConfigs(spec, 0).ok());
  spec.kind = JobKind::kQuantSearch;
  StatusOr<std::vector<std::string>> configs = ExpandConfigs(spec, 2);
  ASSERT_FALSE(configs.ok());
  EXPECT_THAT(configs.status().message(), HasSubstr("'quant-search' has no fixed list of configs"));
}

TEST(JobSpecTest, ParsesAQuantSearchWithDefaultsAndParameters) {
  const std::string head = "kind: quant-search\nmodel: m\nprobes: p\n";
  JobSpec spec = ParsedOrDie(head + "quant-search: {}\n");
  EXPECT_EQ(spec.kind, JobKind::kQuantSearch);
  EXPECT_EQ(spec.search_method, "int8-absmax");
  EXPECT_EQ(spec.beam_width, 10);
  EXPECT_EQ(spec.depth, 0);
  EXPECT_TRUE(spec.components.empty());

  spec = ParsedOrDie(head + "quant-search:\n  method: prune:0.50\n  beam: 3\n  depth: 4\n"
                            "  components: ['*.self_attn.*']\n");
  EXPECT_EQ(spec.search_method, "prune:0.5");
  EXPECT_EQ(spec.beam_width, 3);
  EXPECT_EQ(spec.depth, 4);
  EXPECT_EQ(spec.components, std::vector<std::string>{"*.self_attn.*"});
}

TEST(JobSpecTest, RejectsBadQuantSearchParameters) {
  const std::string head = "kind: quant-search\nmodel: m\nprobes: p\n";
  ExpectInvalid(head + "quant-search:\n  beam: 0\n", {"quant-search.beam (line 5)", "at least 1, got 0"});
  ExpectInvalid(head + "quant-search:\n  depth: -1\n", {"quant-search.depth (line 5)", "at least 0"});
  ExpectInvalid(head + "quant-search:\n  method: int4\n", {"quant-search.method (line 5)", "int4"});
  ExpectInvalid(head + "quant-search:\n  width: 3\n", {"quant-search.width (line 5)", "unknown field"});
  ExpectInvalid(head, {"quant-search: missing"});
}

TEST(JobSpecTest, ParsesASparsifyRoundWithDefaultsAndParameters) {
  const std::string head = "kind: sparsify-round\nmodel: m\nprobes: p\n";
  JobSpec spec = ParsedOrDie(head + "sparsify-round: {step: 0.1}\n");
  EXPECT_EQ(spec.kind, JobKind::kSparsifyRound);
  EXPECT_EQ(spec.step, 0.1);
  EXPECT_FALSE(spec.uniform_allocation);
  EXPECT_TRUE(spec.previous.empty());
  EXPECT_TRUE(spec.components.empty());
  EXPECT_EQ(spec.probe_multiples, (std::vector<double>{0.5, 1.5}));  // the paper's step +- step/2

  spec = ParsedOrDie(head + "sparsify-round:\n  step: 5e-2\n  allocation: uniform\n  previous: r1.json\n"
                            "  components: ['*.mlp.*']\n  probe_at: [0.5, 1, 1.5]\n");
  EXPECT_EQ(spec.probe_multiples, (std::vector<double>{0.5, 1, 1.5}));
  EXPECT_EQ(spec.step, 0.05);
  EXPECT_TRUE(spec.uniform_allocation);
  EXPECT_EQ(spec.previous, "r1.json");
  EXPECT_EQ(spec.components, std::vector<std::string>{"*.mlp.*"});
  EXPECT_FALSE(ParsedOrDie(head + "sparsify-round: {step: 0.2, allocation: balanced}\n").uniform_allocation);
}

TEST(JobSpecTest, RejectsBadSparsifyRoundParameters) {
  const std::string head = "kind: sparsify-round\nmodel: m\nprobes: p\n";
  ExpectInvalid(head + "sparsify-round: {allocation: uniform}\n", {"sparsify-round.step (line 4): missing"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0\n", {"sparsify-round.step (line 5)", "in (0, 1)", "got '0'"});
  ExpectInvalid(head + "sparsify-round:\n  step: 1\n", {"sparsify-round.step (line 5)", "in (0, 1)"});
  ExpectInvalid(head + "sparsify-round:\n  step: 10%\n", {"sparsify-round.step (line 5)", "finite number", "'10%'"});
  ExpectInvalid(head + "sparsify-round:\n  step: .nan\n", {"sparsify-round.step (line 5)", "finite number"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0.1\n  allocation: greedy\n",
                {"sparsify-round.allocation (line 6)", "balanced or uniform", "'greedy'"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0.1\n  previous: ''\n",
                {"sparsify-round.previous (line 6): must not be empty"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0.1\n  steps: 2\n", {"sparsify-round.steps (line 6)", "unknown field"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0.1\n  probe_at: 0.5\n",
                {"sparsify-round.probe_at (line 6)", "1 to 8 multiples of the step"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0.1\n  probe_at: []\n", {"sparsify-round.probe_at (line 6)"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0.1\n  probe_at: [0.5, 0]\n",
                {"sparsify-round.probe_at[1] (line 6)", "in (0, 4]", "got '0'"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0.1\n  probe_at: [1.5, 0.5]\n",
                {"sparsify-round.probe_at[1] (line 6)", "ascending"});
  ExpectInvalid(head + "sparsify-round:\n  step: 0.1\n  probe_at: [0.5, half]\n",
                {"sparsify-round.probe_at[1] (line 6)", "finite number", "'half'"});
  ExpectInvalid(head + "sparsify-round: {step: 0.1}\nquant-search: {}\n",
                {"quant-search (line 5): section does not match kind 'sparsify-round'"});
}

TEST(JobSpecTest, TakesAReferenceModelExceptForASparsifyRound) {
  const std::string evaluate = "kind: evaluate\nmodel: m\nprobes: p\nevaluate: {configs: [model.layers.0.mlp.up_proj=int8-absmax]}\n";
  EXPECT_EQ(ParsedOrDie(evaluate).reference, "");
  EXPECT_EQ(ParsedOrDie(evaluate + "reference: /models/a\n").reference, "/models/a");
  EXPECT_EQ(ParsedOrDie("kind: probe\nmodel: m\nprobes: p\nreference: a\nprobe: {methods: [int8-absmax]}\n").reference,
            "a");
  ExpectInvalid(evaluate + "reference: ''\n", {"reference (line 5): must not be empty"});
  ExpectInvalid(evaluate + "reference: [a, b]\n", {"reference (line 5)"});
  ExpectInvalid("kind: sparsify-round\nmodel: m\nprobes: p\nreference: a\nsparsify-round: {step: 0.1}\n",
                {"reference (line 4)", "measures against its own model"});
}

}  // namespace
}  // namespace dtm
