#include "worker/task_executor.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <limits>
#include <list>
#include <map>
#include <utility>
#include <vector>

#include <torch/torch.h>

#ifdef DTM_WORKER_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAGuard.h>
#endif

#include "common/components.h"
#include "common/compression_config.h"
#include "common/input_checks.h"
#include "common/shard_tag.h"
#include "common/user_text.h"
#include "worker/engine/activation_cache.h"
#include "worker/engine/baseline.h"
#include "worker/engine/calibration.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/engine_error.h"
#include "worker/engine/evaluator.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/perplexity_windows.h"
#include "worker/engine/tensor_util.h"
#include "worker/engine/tokenizer.h"
#include "worker/engine/training_run.h"

namespace dtm {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t MsSince(Clock::time_point t0) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

StatusOr<dtm::v1::Dtype> ToProtoDtype(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return dtm::v1::DTYPE_F32;
    case torch::kFloat16: return dtm::v1::DTYPE_F16;
    case torch::kBFloat16: return dtm::v1::DTYPE_BF16;
    default: return InvalidArgumentError("dtype " + DTypeName(dtype) + " is not a replica precision");
  }
}

std::string TaskName(const dtm::v1::Task& task) { return "task " + task.task_id(); }

bool NeedsCalibration(const CompressionConfig& config) {
  for (const auto& entry : config.entries) {
    if (entry.second.kind == MethodKind::kGptq) return true;
  }
  return false;
}

// Token ids travel as uint32; the engine holds int32.
StatusOr<std::vector<int32_t>> ToTokens(const google::protobuf::RepeatedField<uint32_t>& ids, const std::string& where) {
  std::vector<int32_t> out;
  out.reserve(ids.size());
  for (uint32_t id : ids) {
    if (id > static_cast<uint32_t>(std::numeric_limits<int32_t>::max())) {
      return InvalidArgumentError(where + ": token id " + std::to_string(id) + " is out of range");
    }
    out.push_back(static_cast<int32_t>(id));
  }
  return out;
}

// Rows must be the shard's probes, in order, each of the length the key says: anything else would
// be cached under a key that does not describe it.
Status CheckRows(const dtm::v1::Task& task, int64_t expected_length) {
  const dtm::v1::CacheKey& key = task.key();
  const std::string where = TaskName(task);
  if (task.rows().empty()) return InvalidArgumentError(where + " has no rows");
  if (key.prefix_len() < 1) return InvalidArgumentError(where + ": key.prefix_len must be at least 1");
  if (key.completion_len() < 1) return InvalidArgumentError(where + ": key.completion_len must be at least 1");
  const dtm::v1::ShardRange& shard = key.shard();
  const bool shard_set = shard.end() > shard.begin();
  if (shard_set && static_cast<uint32_t>(task.rows_size()) != shard.end() - shard.begin()) {
    return InvalidArgumentError(where + " has " + std::to_string(task.rows_size()) + " rows for shard [" +
                                std::to_string(shard.begin()) + ", " + std::to_string(shard.end()) + ")");
  }
  for (int i = 0; i < task.rows_size(); ++i) {
    const dtm::v1::BaselineRow& row = task.rows(i);
    const std::string row_where = where + " row " + std::to_string(i) + " (probe " + Quoted(row.probe_id()) + ")";
    if (row.probe_id().empty()) return InvalidArgumentError(where + " row " + std::to_string(i) + " has no probe_id");
    if (shard_set && row.probe_index() != shard.begin() + static_cast<uint32_t>(i)) {
      return InvalidArgumentError(row_where + ": probe_index " + std::to_string(row.probe_index()) + ", expected " +
                                  std::to_string(shard.begin() + i) + " in shard order");
    }
    if (row.prefix_len() != 0 && row.prefix_len() != key.prefix_len()) {
      return InvalidArgumentError(row_where + ": prefix_len " + std::to_string(row.prefix_len()) +
                                  " differs from key.prefix_len " + std::to_string(key.prefix_len()));
    }
    if (row.tokens_size() != expected_length) {
      return InvalidArgumentError(row_where + ": " + std::to_string(row.tokens_size()) + " tokens, expected " +
                                  std::to_string(expected_length));
    }
  }
  return OkStatus();
}

uint64_t ReadResidentBytes() {
  std::FILE* f = std::fopen("/proc/self/statm", "r");
  if (f == nullptr) return 0;
  unsigned long long size_pages = 0, resident_pages = 0;  // NOLINT: fscanf's types
  const int read = std::fscanf(f, "%llu %llu", &size_pages, &resident_pages);
  std::fclose(f);
  if (read != 2) return 0;
  return static_cast<uint64_t>(resident_pages) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// A quarter of the memory the model's device has free now (after the model is loaded), so that kept
// streams never crowd out a forward's own activations: MemAvailable of /proc/meminfo on the CPU,
// the CUDA runtime's free memory on a GPU. 0 when it cannot be read.
int64_t DefaultActivationCacheBytes(const torch::Device& device) {
#ifdef DTM_WORKER_WITH_CUDA
  if (device.is_cuda()) {
    c10::cuda::CUDAGuard guard(device.has_index() ? device.index() : 0);
    size_t free_bytes = 0, total_bytes = 0;
    if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) return 0;
    return static_cast<int64_t>(free_bytes / 4);
  }
#endif
  (void)device;
  std::FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return 0;
  char line[256];
  long long available_kb = 0;  // NOLINT: sscanf's type
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::sscanf(line, "MemAvailable: %lld kB", &available_kb) == 1) break;
  }
  std::fclose(f);
  return static_cast<int64_t>(available_kb) * 1024 / 4;
}

// Elements of every component's weight as loaded, e.g. 4096 * 11008 for a Llama-2-7B up_proj.
std::map<std::string, uint64_t> CountComponentParams(LlamaModel& model) {
  std::map<std::string, uint64_t> params;
  for (const ComponentId& id : AllComponents(static_cast<int>(model.config().num_hidden_layers))) {
    params[id.Name()] = static_cast<uint64_t>(model.ComponentWeight(id).numel());
  }
  return params;
}

// One replica and its evaluator; see TaskExecutor.
class EngineExecutor final : public TaskExecutor {
 public:
  EngineExecutor(const EngineExecutorOptions& options, std::unique_ptr<LlamaModel> model, std::string fingerprint,
                 dtm::v1::Dtype dtype)
      : batch_size_(options.batch_size),
        device_(options.device),
        gang_bind_host_(options.gang_bind_host),
        model_path_(options.model_path),
        model_(std::move(model)),
        component_params_(CountComponentParams(*model_)),
        fingerprint_(std::move(fingerprint)),
        dtype_(dtype),
        evaluator_(model_.get(), nullptr),
        activations_(options.activation_cache_bytes >= 0
                         ? options.activation_cache_bytes
                         : DefaultActivationCacheBytes(model_->options().device) /
                               std::max(1, options.activation_cache_sharers)) {
    if (activations_.budget() > 0) evaluator_.SetActivationCache(&activations_, options.activation_cache_every);
  }

  ~EngineExecutor() override { evaluator_.SetActivationCache(nullptr); }

  Status Execute(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request) override {
    return Execute(task, request, TaskHooks{});
  }

  Status Execute(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request, const TaskHooks& hooks) override {
    RETURN_IF_ERROR(CheckKey(task));
    if (task.kind() == dtm::v1::TASK_KIND_TRAIN) return ExecuteTrain(task, request, hooks);
    // Exceptions from libtorch stop here; the weights are restored whatever happened, since the
    // replica serves every later task.
    try {
      switch (task.kind()) {
        case dtm::v1::TASK_KIND_BASELINE_SHARD: return ExecuteBaseline(task, request);
        case dtm::v1::TASK_KIND_EVAL_SHARD: return ExecuteEval(task, request);
        case dtm::v1::TASK_KIND_TEXT_WINDOWS: return ExecuteTextWindows(task, request);
        default:
          return InvalidArgumentError(TaskName(task) + " has kind " + dtm::v1::TaskKind_Name(task.kind()) +
                                      ", which this worker cannot run");
      }
    } catch (const std::exception& e) {
      evaluator_.Restore();
      // Out of memory (CUDA, CPU or std::bad_alloc) is RESOURCE_EXHAUSTED, anything else INTERNAL.
      return StatusFromException(e, TaskName(task) + " failed in the engine");
    }
  }

  std::string model_fingerprint() const override { return fingerprint_; }
  dtm::v1::Dtype dtype() const override { return dtype_; }
  int num_layers() const override { return static_cast<int>(model_->config().num_hidden_layers); }
  std::map<std::string, uint64_t> component_params() const override { return component_params_; }

  std::string calibration_fingerprint() const override {
    return calibration_ == nullptr ? "" : calibration_->fingerprint();
  }

  Status SetCalibration(const dtm::v1::CalibrationSet& set) override {
    const std::string where = "calibration set " + Quoted(set.fingerprint());
    CalibrationSequences sequences;
    sequences.seq_len = set.seq_len();
    sequences.fingerprint = set.fingerprint();
    for (const dtm::v1::TokenSequence& s : set.sequences()) {
      ASSIGN_OR_RETURN(std::vector<int32_t> tokens, ToTokens(s.tokens(), where));
      sequences.sequences.push_back(std::move(tokens));
    }
    RETURN_IF_ERROR(CheckCalibrationSet(sequences, model_->config(), where));
    // One set at a time: its Hessians (up to [11008, 11008] floats per site of a 7B layer) are
    // what is worth keeping, and a job's tasks all name the same set.
    evaluator_.SetCalibration(nullptr);
    calibration_ = std::make_unique<CalibrationHessians>(std::move(sequences), batch_size_);
    evaluator_.SetCalibration(calibration_.get());
    return OkStatus();
  }

  dtm::v1::DeviceInfo device() const override {
    dtm::v1::DeviceInfo info;
    const torch::Device& device = model_->options().device;
#ifdef DTM_WORKER_WITH_CUDA
    if (device.is_cuda()) {
      const cudaDeviceProp* props = at::cuda::getDeviceProperties(device.has_index() ? device.index() : 0);
      info.set_description(props->name);
      info.set_type("cuda");
      info.set_memory_bytes(props->totalGlobalMem);
      return info;
    }
#endif
    info.set_description(device.str());
    info.set_type(device.is_cuda() ? "cuda" : "cpu");
    info.set_memory_bytes(static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)));
    return info;
  }

  ActivationCacheStats activation_cache_stats() const override {
    ActivationCacheStats stats;
    stats.budget_bytes = activations_.budget();
    stats.bytes = activations_.bytes();
    stats.streams = static_cast<int64_t>(activations_.size());
    stats.hits = activations_.hits();
    stats.misses = activations_.misses();
    stats.evictions = activations_.evictions();
    return stats;
  }

  std::vector<std::string> held_shards() const override {
    std::vector<std::string> tags;
    for (const auto& [tag, group] : shards_) {
      if (activations_.StreamsOf(group) > 0) tags.push_back(tag);
    }
    return tags;
  }

  uint64_t device_memory_bytes() const override {
#ifdef DTM_WORKER_WITH_CUDA
    const torch::Device& device = model_->options().device;
    if (device.is_cuda()) {
      // allocated_bytes[0] is the aggregate over pool kinds (StatType::AGGREGATE in every 2.x).
      const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.has_index() ? device.index() : 0);
      return static_cast<uint64_t>(stats.allocated_bytes[0].current);
    }
#endif
    return ReadResidentBytes();
  }

 private:
  Status CheckKey(const dtm::v1::Task& task) const {
    const dtm::v1::CacheKey& key = task.key();
    if (key.model_fingerprint() != fingerprint_) {
      return FailedPreconditionError(TaskName(task) + " is for model fingerprint '" + key.model_fingerprint() +
                                     "' but this worker holds '" + fingerprint_ + "'");
    }
    if (key.dtype() != dtype_) {
      return FailedPreconditionError(TaskName(task) + " is for dtype " + dtm::v1::Dtype_Name(key.dtype()) +
                                     " but this worker's replica runs in " + dtm::v1::Dtype_Name(dtype_));
    }
    return OkStatus();
  }

  Status ExecuteBaseline(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request) {
    const dtm::v1::CacheKey& key = task.key();
    RETURN_IF_ERROR(CheckRows(task, key.prefix_len()));
    ProbeSet probes;
    for (const dtm::v1::BaselineRow& row : task.rows()) {
      ASSIGN_OR_RETURN(std::vector<int32_t> tokens,
                       ToTokens(row.tokens(), TaskName(task) + " probe " + Quoted(row.probe_id())));
      probes.probes.push_back({row.probe_id(), std::move(tokens)});
    }
    GenerateOptions options;
    options.completion_len = key.completion_len();
    options.batch_size = batch_size_;
    options.source = TaskName(task);  // errors name the task and the probe
    const auto t0 = Clock::now();
    ASSIGN_OR_RETURN(Baseline baseline, GenerateBaseline(*model_, probes, options));
    dtm::v1::TaskTiming* timing = request->mutable_timing();
    timing->set_compute_ms(MsSince(t0));

    dtm::v1::BaselineShardOutput* output = request->mutable_baseline();
    uint64_t tokens = 0;
    for (size_t i = 0; i < baseline.rows.size(); ++i) {
      const BaselineRow& generated = baseline.rows[i];
      dtm::v1::BaselineRow* row = output->add_rows();
      row->set_probe_id(generated.id);
      row->set_probe_index(task.rows(static_cast<int>(i)).probe_index());
      row->set_prefix_len(static_cast<uint32_t>(generated.prefix_len));
      for (int32_t t : generated.tokens) row->add_tokens(static_cast<uint32_t>(t));
      tokens += generated.tokens.size();
    }
    timing->set_tokens_processed(tokens);
    return OkStatus();
  }

  // The shard `tag`'s streams are kept under `group`; shards whose streams are all gone are dropped.
  void RememberShard(const std::string& tag, const std::string& group) {
    shards_.remove_if([&](const auto& shard) { return shard.first == tag || activations_.StreamsOf(shard.second) == 0; });
    shards_.emplace_front(tag, group);
  }

  Status ExecuteEval(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request) {
    const dtm::v1::CacheKey& key = task.key();
    RETURN_IF_ERROR(CheckRows(task, static_cast<int64_t>(key.prefix_len()) + key.completion_len()));
    StatusOr<CompressionConfig> parsed = ParseCompressionConfig(key.config().canonical(), num_layers());
    if (!parsed.ok()) {
      return InvalidArgumentError(TaskName(task) + ": config '" + key.config().canonical() +
                                  "': " + parsed.status().message());
    }
    const CompressionConfig& config = *parsed;
    Baseline baseline;
    uint64_t tokens = 0;
    for (const dtm::v1::BaselineRow& row : task.rows()) {
      ASSIGN_OR_RETURN(std::vector<int32_t> ids,
                       ToTokens(row.tokens(), TaskName(task) + " probe " + Quoted(row.probe_id())));
      tokens += ids.size();
      baseline.rows.push_back({row.probe_id(), static_cast<int64_t>(key.prefix_len()), std::move(ids)});
    }
    RETURN_IF_ERROR(ValidateBaselineForModel(baseline, *model_, TaskName(task)));
    // After the row checks: a task no worker could run must fail INVALID_ARGUMENT, not
    // FAILED_PRECONDITION, which sends it on to another worker.
    if (NeedsCalibration(config)) {
      if (key.calibration_fingerprint().empty()) {
        return InvalidArgumentError(TaskName(task) + ": config '" + key.config().canonical() +
                                    "' uses gptq but the task's key names no calibration set");
      }
      if (calibration_fingerprint() != key.calibration_fingerprint()) {
        // The Worker fetches the set before running the task; another worker, or a retry, may run it.
        return FailedPreconditionError(TaskName(task) + ": needs calibration set " +
                                       key.calibration_fingerprint().substr(0, 12) + ", this worker holds " +
                                       (calibration_ == nullptr ? "none" : calibration_fingerprint().substr(0, 12)));
      }
    }

    // Evaluator::Evaluate is Apply + EvaluateCurrent + Restore; the steps run one by one here so
    // that each is timed.
    dtm::v1::TaskTiming* timing = request->mutable_timing();
    EvalOptions options;
    options.batch_size = batch_size_;
    // A parent that does not parse only keeps fewer streams: it never changes a result.
    StatusOr<CompressionConfig> parent = ParseCompressionConfig(task.parent_config(), num_layers());
    if (parent.ok()) options.parent = std::move(*parent);
    auto t0 = Clock::now();
    if (!config.empty()) RETURN_IF_ERROR(evaluator_.Apply(config));
    timing->set_apply_ms(MsSince(t0));
    t0 = Clock::now();
    StatusOr<EvalResult> result = evaluator_.EvaluateCurrent(baseline, options);
    timing->set_compute_ms(MsSince(t0));
    t0 = Clock::now();
    evaluator_.Restore();
    timing->set_restore_ms(MsSince(t0));
    if (!result.ok()) return result.status();

    dtm::v1::EvalShardOutput* output = request->mutable_eval();
    for (size_t i = 0; i < result->per_probe.size(); ++i) {
      const ProbeDivergence& d = result->per_probe[i];
      dtm::v1::ProbeResult* r = output->add_results();
      r->set_probe_id(result->ids[i]);
      r->set_probe_index(task.rows(static_cast<int>(i)).probe_index());
      r->set_fdt(static_cast<uint32_t>(d.fdt));
      r->set_sdt(static_cast<uint32_t>(d.sdt));
      r->set_nll(d.nll);
      r->set_outlier_columns(static_cast<uint32_t>(result->outlier_columns[i]));
    }
    timing->set_tokens_processed(tokens);
    if (!result->streams_group.empty()) RememberShard(ShardTag(key), result->streams_group);
    timing->set_layer_forwards(static_cast<uint64_t>(result->layer_forwards));
    timing->set_full_layer_forwards(static_cast<uint64_t>(result->full_layer_forwards));
    return OkStatus();
  }

  // SPEC `ppl`: the text tokenized once and cut into windows, exactly as `dtmctl ppl --text` cuts it.
  Status ExecuteTrain(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request, const TaskHooks& hooks) {
    const dtm::v1::TrainInput& in = task.train();
    TrainingRunOptions run;
    run.model_dir = model_path_;
    run.data = in.data_path();
    run.data_format = in.data_format();
    run.out_dir = in.output_dir();
    run.phases = in.phases();
    run.batch = in.batch();
    run.micro_batch = in.micro_batch();
    run.seq_len = in.seq_len();
    run.max_sequences = static_cast<int64_t>(in.max_sequences());
    run.learning_rate = in.learning_rate();
    run.warmup_steps = in.warmup_steps();
    run.schedule = in.schedule();
    run.weight_decay = in.weight_decay();
    run.clip_grad_norm = in.clip_grad_norm();
    run.seed = in.seed();
    run.checkpoint_dir = in.checkpoint_dir();
    run.checkpoint_every = in.checkpoint_every();
    run.device = device_;
    run.rank = static_cast<int>(in.rank());
    run.gang_size = static_cast<int>(std::max<uint32_t>(1, in.gang_size()));
    run.master = in.rendezvous();
    run.bind_host = gang_bind_host_;
    run.timeout_seconds = static_cast<int>(in.timeout_seconds() > 0 ? in.timeout_seconds() : 300);
    run.shard_optimizer = in.shard_optimizer();
    run.activation_checkpointing = in.activation_checkpointing();
    run.prune = in.prune();
    run.remask = in.remask();
    if (hooks.progress) {
      run.on_step = [&hooks](int64_t step, int64_t total, double loss) {
        hooks.progress(static_cast<uint32_t>(step + 1), static_cast<uint32_t>(total), loss);
      };
    }
    run.should_stop = hooks.cancelled;
    run.log = hooks.log;
    const auto t0 = Clock::now();
    StatusOr<TrainingRunResult> trained = RunTraining(run);
    if (!trained.ok()) {
      const Status& s = trained.status();
      // An output folder in use or a checkpoint folder of another run fails on every worker: the
      // task's fault, not this worker's (FAILED_PRECONDITION would send it round the workers).
      const StatusCode code = s.code() == StatusCode::kFailedPrecondition ? StatusCode::kInvalidArgument : s.code();
      return Status(code, TaskName(task) + ": " + s.message());
    }
    const TrainingRunResult& r = *trained;
    dtm::v1::TrainingResult& out = *request->mutable_train();
    out.set_rank(in.rank());
    out.set_gang_size(static_cast<uint32_t>(run.gang_size));
    if (in.rank() == 0) {
      for (double loss : r.report.losses) out.add_losses(loss);
      out.set_steps(static_cast<uint32_t>(r.report.steps_total));
      out.set_resumed_from_step(static_cast<uint32_t>(r.report.resumed_at));
      // Every member trains its share of each batch at the same pace: the gang's rate is W times one member's.
      out.set_tokens_per_second(r.report.seconds > 0 ? r.report.tokens_trained * run.gang_size / r.report.seconds : 0);
      out.set_output_dir(in.output_dir());
      out.set_output_fingerprint(r.out_fingerprint);
      out.set_data_fingerprint(r.data_fingerprint);
      out.set_masked_weights(static_cast<uint64_t>(r.pruned_entries));
      for (const TrainingRunResult::ComponentZeros& z : r.output_zeros) {
        dtm::v1::ComponentZeros& row = *out.add_output_zeros();
        row.set_component(z.component);
        row.set_zeros(static_cast<uint64_t>(z.zeros));
        row.set_params(static_cast<uint64_t>(z.params));
      }
    }
    dtm::v1::TaskTiming& timing = *request->mutable_timing();
    timing.set_compute_ms(static_cast<uint64_t>(std::chrono::duration<double, std::milli>(Clock::now() - t0).count()));
    timing.set_tokens_processed(static_cast<uint64_t>(r.report.tokens_trained));
    return OkStatus();
  }

  Status ExecuteTextWindows(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request) {
    const dtm::v1::CacheKey& key = task.key();
    const dtm::v1::TextWindowsInput& input = task.text_windows();
    const std::string where = TaskName(task) + " (ppl text windows)";
    if (input.window() < 2 || key.prefix_len() != 1 || key.completion_len() + 1 != input.window()) {
      return InvalidArgumentError(where + ": window " + std::to_string(input.window()) + " does not fit key prefix " +
                                  std::to_string(key.prefix_len()) + " + completion " +
                                  std::to_string(key.completion_len()) + " (prefix 1, window - 1 expected)");
    }
    if (input.join() != "rows" && input.join() != "as-is") {
      return InvalidArgumentError(where + ": join must be rows or as-is, got " + Quoted(input.join()));
    }
    if (tokenizer_ == nullptr) {
      // A model folder without tokenizer files can still run every other task; another worker of
      // the same model may have them.
      StatusOr<std::unique_ptr<Tokenizer>> loaded = Tokenizer::FromModelDir(model_path_);
      if (!loaded.ok()) {
        return FailedPreconditionError(where + ": this worker cannot tokenize: " + loaded.status().message());
      }
      tokenizer_ = std::move(*loaded);
    }
    const auto t0 = Clock::now();
    const std::string text = input.join() == "rows" ? JoinLinesAsRows(input.text()) : input.text();
    ASSIGN_OR_RETURN(PerplexityWindows cut, PerplexityWindowsFromText(text, *tokenizer_, input.window(), where));
    // A tokenizer with more pieces than config.json's vocab_size, or a window beyond the context.
    RETURN_IF_ERROR(ValidateProbeSetForModel(cut.windows, model_->config(), 0, where));
    dtm::v1::TextWindowsOutput* output = request->mutable_text_windows();
    for (const Probe& w : cut.windows.probes) {
      dtm::v1::TokenSequence* out = output->add_windows();
      for (int32_t t : w.tokens) out->add_tokens(static_cast<uint32_t>(t));
    }
    output->set_text_tokens(static_cast<uint64_t>(cut.text_tokens));
    request->mutable_timing()->set_compute_ms(MsSince(t0));
    return OkStatus();
  }

  int64_t batch_size_;
  std::string device_;          // as the options name it: train tasks load their copy there
  std::string gang_bind_host_;
  std::string model_path_;
  std::unique_ptr<Tokenizer> tokenizer_;  // loaded by the first text-windows task
  std::unique_ptr<LlamaModel> model_;
  std::map<std::string, uint64_t> component_params_;  // counted once at load; after model_
  std::string fingerprint_;
  dtm::v1::Dtype dtype_;
  Evaluator evaluator_;  // after model_, which it points into
  ActivationCache activations_;  // the evaluator's kept streams; unset from it before destruction
  std::list<std::pair<std::string, std::string>> shards_;  // (shard tag, streams group), most recent first
  // The set of the latest SetCalibration (null before one); evaluator_ points at it, and is
  // re-pointed whenever it is replaced.
  std::unique_ptr<CalibrationHessians> calibration_;
};

StatusOr<std::unique_ptr<TaskExecutor>> CreateEngineExecutorOrError(const EngineExecutorOptions& options,
                                                                    double* load_seconds) {
  if (options.batch_size < 1) return InvalidArgumentError("batch size must be at least 1");
  ASSIGN_OR_RETURN(torch::Device device, ParseDevice(options.device));
  torch::ScalarType dtype = DefaultDTypeFor(device);
  if (!options.dtype.empty()) {
    ASSIGN_OR_RETURN(dtype, ParseDType(options.dtype));
  }
  ASSIGN_OR_RETURN(dtm::v1::Dtype proto_dtype, ToProtoDtype(dtype));
  RETURN_IF_ERROR(CheckDTypeOnDevice(dtype, device));

  const auto t0 = Clock::now();
  auto model_error = [&](const Status& s) {
    return Status(s.code(), "cannot load model " + options.model_path + ": " + s.message());
  };
  StatusOr<std::unique_ptr<Checkpoint>> checkpoint = Checkpoint::Open(options.model_path);
  if (!checkpoint.ok()) return model_error(checkpoint.status());
  StatusOr<std::string> fingerprint = (*checkpoint)->Fingerprint();
  if (!fingerprint.ok()) return model_error(fingerprint.status());
  StatusOr<std::unique_ptr<LlamaModel>> model = LlamaModel::Load(**checkpoint, ModelOptions{dtype, device});
  if (!model.ok()) return model_error(model.status());
  if (load_seconds != nullptr) *load_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  return std::unique_ptr<TaskExecutor>(std::make_unique<EngineExecutor>(
      options, std::move(*model), std::move(*fingerprint), proto_dtype));
}

}  // namespace

StatusOr<std::unique_ptr<TaskExecutor>> CreateEngineExecutor(const EngineExecutorOptions& options,
                                                             double* load_seconds) {
  try {
    return CreateEngineExecutorOrError(options, load_seconds);
  } catch (const std::exception& e) {
    return StatusFromException(e, "cannot load model " + options.model_path);
  }
}

uint64_t ProcessResidentBytes() { return ReadResidentBytes(); }

}  // namespace dtm
