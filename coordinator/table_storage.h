// TableStorage: the coordinator's typed tables over the Store (Ray's GcsTableStorage): job records,
// final results, the model registry and the content-addressed result cache (baselines, eval
// results, ppl text windows), each in the layout of
// store_keys.h. Every call is one or a few store round trips.
//
// Thread-safety: thread-safe (the Store is); it keeps no state. Callers must not hold a lock that
// RPCs contend for across these calls: each may wait for a store command timeout.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "coordinator/store_keys.h"
#include "coordinator/worker_registry.h"
#include "dtm/v1/dtm_service.pb.h"
#include "dtm/v1/job.pb.h"
#include "dtm/v1/worker_service.pb.h"

namespace dtm {

class Store;

class TableStorage {
 public:
  explicit TableStorage(Store* store) : store_(store) {}

  Status Ping();

  // The model registry: (normal path, dtype) -> model. Malformed entries are skipped with a warning.
  StatusOr<std::map<std::pair<std::string, dtm::v1::Dtype>, ModelInfo>> LoadModels();
  Status SaveModel(const std::string& path, dtm::v1::Dtype dtype, const ModelInfo& model);

  // Every job record; unreadable ones are skipped with an error logged (and left in the store).
  StatusOr<std::vector<dtm::v1::Job>> LoadJobs();
  // Stores a new job record unless one with its id exists: true when this call created it.
  StatusOr<bool> CreateJob(const dtm::v1::Job& job);
  // The record stored under `job_id`, or nullopt.
  StatusOr<std::optional<dtm::v1::Job>> LoadJob(const std::string& job_id);
  Status SaveJob(const dtm::v1::Job& job);
  Status SaveResults(const dtm::v1::GetResultsResponse& results);
  // DATA_LOSS when the results of a succeeded job are missing or unreadable.
  StatusOr<dtm::v1::GetResultsResponse> LoadResults(const std::string& job_id);

  // Whether each task has a result in the cache.
  StatusOr<std::vector<bool>> HaveResults(const std::vector<std::pair<TaskKindForKey, std::string>>& tasks);
  // A cached shard, or DATA_LOSS naming `what` when it is missing or unreadable.
  StatusOr<dtm::v1::BaselineShardOutput> ReadBaseline(const std::string& task_id, const std::string& what);
  StatusOr<dtm::v1::EvalShardOutput> ReadEval(const std::string& task_id, const std::string& what);
  StatusOr<dtm::v1::TextWindowsOutput> ReadTextWindows(const std::string& task_id, const std::string& what);
  // A train task's result (its rank 0's report).
  StatusOr<dtm::v1::TrainingResult> ReadTraining(const std::string& task_id, const std::string& what);
  // Every probe's result of `config` on the shards of `base_key`, in probe order; DATA_LOSS when a
  // shard is missing.
  StatusOr<std::vector<dtm::v1::ProbeResult>> ReadConfigResults(
      const dtm::v1::CacheKey& base_key, const std::vector<std::pair<uint32_t, uint32_t>>& shards,
      const std::string& config);
  // Stores a task's result, once: true when this call stored it, false when the task had a result
  // already (which is kept). The stored output names `worker_id` in computed_by, and the key is
  // added to the worker's index for PurgeWorker.
  StatusOr<bool> StoreResult(TaskKindForKey kind, const std::string& task_id, const std::string& worker_id,
                             const dtm::v1::CompleteTaskRequest& request);
  // A job's calibration set, stored once under its fingerprint (the same set may serve many jobs).
  Status StoreCalibration(const dtm::v1::CalibrationSet& set);
  // The set stored under `fingerprint`, or nullopt; DATA_LOSS when it is unreadable.
  StatusOr<std::optional<dtm::v1::CalibrationSet>> LoadCalibration(const std::string& fingerprint);
  // Deletes every cached result computed by `worker_id`, and its index: the task ids deleted.
  StatusOr<std::vector<std::string>> PurgeWorker(const std::string& worker_id);

 private:
  Store* const store_;
};

}  // namespace dtm
