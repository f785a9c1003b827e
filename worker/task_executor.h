// TaskExecutor: what runs one leased task on the worker's model replica. The Worker talks to the
// coordinator and knows nothing of torch; the engine-backed executor (CreateEngineExecutor) is the
// only implementation outside tests, which fake this interface to test the Worker without a model.
//
// This header is torch-free, so that the Worker and its tests build without libtorch.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "dtm/v1/common.pb.h"
#include "dtm/v1/worker_service.pb.h"

namespace dtm {

// What a long task (a train task) needs from the Worker while it runs.
struct TaskHooks {
  // Asked between steps: true when the coordinator took the task back (its result is not wanted).
  std::function<bool()> cancelled;
  // After each optimizer step: steps done, in all, and that step's loss (for the heartbeat).
  std::function<void(uint32_t step, uint32_t total, double loss)> progress;
  // A line for the worker's log at each milestone (the data read, the gang joined, the model written).
  std::function<void(const std::string& line)> log;
};

// The residual streams an executor keeps for reuse (worker/engine/activation_cache.h), for metrics.
struct ActivationCacheStats {
  int64_t budget_bytes = 0;  // 0: no cache
  int64_t bytes = 0;
  int64_t streams = 0;
  int64_t hits = 0;          // batches that started above layer 0, since start
  int64_t misses = 0;        // batches that ran from the embedding
  int64_t evictions = 0;
};

// Runs one task at a time on one replica: not thread-safe.
class TaskExecutor {
 public:
  virtual ~TaskExecutor() = default;

  // Execute with hooks; executors of short tasks only (test fakes) keep this default, which ignores them.
  virtual Status Execute(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request, const TaskHooks& hooks) {
    (void)hooks;
    return Execute(task, request);
  }

  // Fills request->eval or request->baseline (one entry per task row, in row order), or
  // request->text_windows, and request->timing (all but total_ms, which the Worker measures from
  // the lease). The code of a
  // failure says who could run the task, and the Worker reports it by exactly these codes:
  //   INVALID_ARGUMENT: the task can never succeed on any worker (a config naming a component the
  //     model lacks, rows inconsistent with the key, duplicate or empty probe ids, token ids
  //     outside the vocabulary, a ppl text shorter than one window or a window beyond the model's
  //     context; the message names the task and the probe);
  //   FAILED_PRECONDITION: this worker cannot run it but another may (another model fingerprint or
  //     precision, a gptq task whose calibration set this executor does not hold: see
  //     SetCalibration; a text-windows task on a model folder without tokenizer files);
  //   RESOURCE_EXHAUSTED: this worker ran out of memory (any allocator: CUDA, CPU, std::bad_alloc);
  //   other codes: transient (INTERNAL for an engine failure; UNAVAILABLE for a train task whose gang
  //     lost a member or never met; CANCELLED for one the hooks said to stop).
  // A train task (TASK_KIND_TRAIN) trains a second, float32 copy of the model folder this worker
  // loaded (the replica keeps serving its fingerprint) and fills request->train.
  virtual Status Execute(const dtm::v1::Task& task, dtm::v1::CompleteTaskRequest* request) = 0;

  virtual std::string model_fingerprint() const = 0;
  virtual dtm::v1::Dtype dtype() const = 0;
  virtual int num_layers() const = 0;
  virtual dtm::v1::DeviceInfo device() const = 0;
  // Memory the replica holds now: CUDA bytes allocated on a GPU, the process's resident set on CPU.
  // For the dtm_worker_device_memory_bytes gauge; 0 when unknown.
  virtual uint64_t device_memory_bytes() const { return 0; }
  virtual ActivationCacheStats activation_cache_stats() const { return {}; }
  // Shards (common/shard_tag.h) whose residual streams the executor keeps now, most recent first:
  // what the Worker reports in LeaseTasksRequest.held_shards.
  virtual std::vector<std::string> held_shards() const { return {}; }
  // Elements of each compressible component's weight, by ComponentId::Name(); empty when unknown.
  virtual std::map<std::string, uint64_t> component_params() const { return {}; }

  // The fingerprint of the GPTQ calibration set gptq tasks run with ("" for none). The Worker
  // fetches the set a task's key names (CacheKey.calibration_fingerprint) when it differs.
  virtual std::string calibration_fingerprint() const { return ""; }
  // Replaces the calibration set. INVALID_ARGUMENT when the set does not hold what its fingerprint
  // says, or does not fit the model (then no task naming it can run anywhere). Executors that run no
  // gptq task (test fakes) keep this default.
  virtual Status SetCalibration(const dtm::v1::CalibrationSet& set) {
    return UnimplementedError("this executor runs no gptq task (calibration set " + set.fingerprint() + ")");
  }
};

struct EngineExecutorOptions {
  std::string model_path;
  std::string dtype;  // "float32" | "float16" | "bfloat16" (or fp32, bf16, ...); "" = the device's default
  std::string device = "cpu";  // "cpu", "cuda", "cuda:N", "auto"
  int64_t batch_size = 8;
  // Residual streams kept for reuse by eval tasks (worker/engine/activation_cache.h): at most this
  // many bytes on the model's device; -1: a quarter of the device's free memory once the model is
  // loaded; 0: none. Every `activation_cache_every`-th layer's input is kept.
  int64_t activation_cache_bytes = -1;
  int activation_cache_every = 1;
  // Executors of one process that share the device (`dtmctl local --workers N`): the default budget
  // is divided among them.
  int activation_cache_sharers = 1;
  // Train tasks: the interface this worker's gang connections (Gloo) listen on.
  std::string gang_bind_host = "127.0.0.1";
};

// Opens the checkpoint, fingerprints it and loads the replica once; *load_seconds (if not null)
// receives the time that took. Errors name the model folder (NOT_FOUND when it cannot be read).
StatusOr<std::unique_ptr<TaskExecutor>> CreateEngineExecutor(const EngineExecutorOptions& options,
                                                             double* load_seconds);

// The process's resident set size from /proc/self/statm; 0 where that cannot be read.
uint64_t ProcessResidentBytes();

}  // namespace dtm
