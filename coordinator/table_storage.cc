#include "coordinator/table_storage.h"

#include <spdlog/spdlog.h>

#include <nlohmann/json.hpp>
#include <set>

#include "common/store.h"

namespace dtm {
namespace {

std::string ModelsField(const std::string& path, v1::Dtype dtype) {
  return path + "\t" + v1::Dtype_Name(dtype);
}

// As WorkerRegistry::Validate admits from a worker.
constexpr int64_t kMaxModelLayers = 1 << 12;

std::string CacheKeyOf(TaskKindForKey kind, const std::string& task_id) {
  switch (kind) {
    case TaskKindForKey::kBaseline: return BaselineStoreKey(task_id);
    case TaskKindForKey::kTextWindows: return TextWindowsStoreKey(task_id);
    case TaskKindForKey::kTrain: return TrainResultStoreKey(task_id);
    case TaskKindForKey::kEval: break;
  }
  return ResultStoreKey(task_id);
}

// The worker a stored output names (computed_by), by the kind its key says; "" when unreadable.
std::string ComputedBy(const std::string& key, const std::string& bytes) {
  auto computed_by = [&bytes](auto output) { return output.ParseFromString(bytes) ? output.computed_by() : ""; };
  if (key.rfind(BaselineStoreKey(""), 0) == 0) return computed_by(v1::BaselineShardOutput());
  if (key.rfind(TextWindowsStoreKey(""), 0) == 0) return computed_by(v1::TextWindowsOutput());
  return computed_by(v1::EvalShardOutput());
}

// The stored shard at `key`, parsed into `T`; DATA_LOSS naming `what` when missing or unreadable.
template <typename T>
StatusOr<T> ReadShard(Store* store, const std::string& key, const std::string& what) {
  ASSIGN_OR_RETURN(std::optional<std::string> bytes, store->Get(key));
  T output;
  if (!bytes.has_value() || !output.ParseFromString(*bytes)) {
    return DataLossError(what + " (" + key + ") is missing or unreadable in the store");
  }
  return output;
}

}  // namespace

Status TableStorage::Ping() { return store_->Ping(); }

StatusOr<std::map<std::pair<std::string, v1::Dtype>, ModelInfo>> TableStorage::LoadModels() {
  ASSIGN_OR_RETURN(auto fields, store_->HashGetAll(kModelsStoreKey));
  std::map<std::pair<std::string, v1::Dtype>, ModelInfo> models;
  for (const auto& [field, value] : fields) {
    const size_t tab = field.rfind('\t');
    v1::Dtype dtype;
    nlohmann::json info = nlohmann::json::parse(value, nullptr, false);
    if (tab == std::string::npos || !v1::Dtype_Parse(field.substr(tab + 1), &dtype) || !info.is_object() ||
        !info.contains("fingerprint") || !info["fingerprint"].is_string() || !info.contains("num_layers") ||
        !info["num_layers"].is_number_integer() || info["num_layers"].get<int64_t>() < 1 ||
        info["num_layers"].get<int64_t>() > kMaxModelLayers) {
      spdlog::warn("store: ignoring a malformed model registry entry");
      continue;
    }
    ModelInfo model{info["fingerprint"].get<std::string>(), {info["num_layers"].get<int>(), {}}};
    if (info.contains("component_params") && info["component_params"].is_object()) {
      for (const auto& [name, count] : info["component_params"].items()) {
        if (count.is_number_unsigned()) model.geometry.component_params[name] = count.get<uint64_t>();
      }
    }
    models[{field.substr(0, tab), dtype}] = std::move(model);
  }
  return models;
}

Status TableStorage::SaveModel(const std::string& path, v1::Dtype dtype, const ModelInfo& model) {
  nlohmann::json value = {{"fingerprint", model.fingerprint},
                          {"num_layers", model.geometry.num_layers},
                          {"component_params", model.geometry.component_params}};
  return store_->HashSet(kModelsStoreKey, ModelsField(path, dtype), value.dump());
}

StatusOr<std::vector<v1::Job>> TableStorage::LoadJobs() {
  ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->Keys(kJobKeyPrefix));
  std::vector<v1::Job> jobs;
  for (const std::string& key : keys) {
    StatusOr<std::optional<std::string>> bytes = store_->Get(key);
    // A key of another type under the prefix is as unreadable as a bad record; only an outage stops the load.
    if (!bytes.ok() && bytes.status().code() == StatusCode::kUnavailable) return bytes.status();
    v1::Job job;
    if (!bytes.ok() || !bytes->has_value() || !job.ParseFromString(**bytes) || job.job_id().empty()) {
      spdlog::error("store: job record {} is unreadable; left as it is", key);
      continue;
    }
    jobs.push_back(std::move(job));
  }
  return jobs;
}

StatusOr<bool> TableStorage::CreateJob(const v1::Job& job) {
  return store_->SetIfAbsent(JobStoreKey(job.job_id()), job.SerializeAsString());
}

StatusOr<std::optional<v1::Job>> TableStorage::LoadJob(const std::string& job_id) {
  ASSIGN_OR_RETURN(std::optional<std::string> bytes, store_->Get(JobStoreKey(job_id)));
  if (!bytes) return std::optional<v1::Job>();
  v1::Job job;
  if (!job.ParseFromString(*bytes)) return DataLossError("the record of job '" + job_id + "' is unreadable");
  return std::optional<v1::Job>(std::move(job));
}

Status TableStorage::SaveJob(const v1::Job& job) {
  return store_->Set(JobStoreKey(job.job_id()), job.SerializeAsString());
}

Status TableStorage::SaveResults(const v1::GetResultsResponse& results) {
  return store_->Set(JobResultsStoreKey(results.job_id()), results.SerializeAsString());
}

StatusOr<v1::GetResultsResponse> TableStorage::LoadResults(const std::string& job_id) {
  return ReadShard<v1::GetResultsResponse>(store_, JobResultsStoreKey(job_id),
                                           "the results of job '" + job_id + "'");
}

StatusOr<std::vector<bool>> TableStorage::HaveResults(
    const std::vector<std::pair<TaskKindForKey, std::string>>& tasks) {
  std::vector<std::string> keys;
  keys.reserve(tasks.size());
  for (const auto& [kind, task_id] : tasks) keys.push_back(CacheKeyOf(kind, task_id));
  return store_->Exist(keys);
}

StatusOr<v1::BaselineShardOutput> TableStorage::ReadBaseline(const std::string& task_id,
                                                             const std::string& what) {
  return ReadShard<v1::BaselineShardOutput>(store_, BaselineStoreKey(task_id), what);
}

StatusOr<v1::TextWindowsOutput> TableStorage::ReadTextWindows(const std::string& task_id, const std::string& what) {
  return ReadShard<v1::TextWindowsOutput>(store_, TextWindowsStoreKey(task_id), what);
}

StatusOr<v1::TrainingResult> TableStorage::ReadTraining(const std::string& task_id, const std::string& what) {
  return ReadShard<v1::TrainingResult>(store_, TrainResultStoreKey(task_id), what);
}

StatusOr<v1::EvalShardOutput> TableStorage::ReadEval(const std::string& task_id, const std::string& what) {
  return ReadShard<v1::EvalShardOutput>(store_, ResultStoreKey(task_id), what);
}

StatusOr<std::vector<v1::ProbeResult>> TableStorage::ReadConfigResults(
    const v1::CacheKey& base_key, const std::vector<std::pair<uint32_t, uint32_t>>& shards,
    const std::string& config) {
  std::vector<v1::ProbeResult> results;
  for (const auto& [begin, end] : shards) {
    const v1::CacheKey key = ShardKey(base_key, config, begin, end);
    ASSIGN_OR_RETURN(v1::EvalShardOutput output,
                     ReadEval(TaskIdFor(TaskKindForKey::kEval, key), "result of '" + config + "' on shard " +
                                                                         std::to_string(begin) + ".." +
                                                                         std::to_string(end)));
    for (v1::ProbeResult& r : *output.mutable_results()) results.push_back(std::move(r));
  }
  return results;
}

Status TableStorage::StoreCalibration(const v1::CalibrationSet& set) {
  // Content-addressed: whichever job stores it first, the bytes are the same.
  return store_->SetIfAbsent(CalibrationStoreKey(set.fingerprint()), set.SerializeAsString()).status();
}

StatusOr<std::optional<v1::CalibrationSet>> TableStorage::LoadCalibration(const std::string& fingerprint) {
  ASSIGN_OR_RETURN(std::optional<std::string> bytes, store_->Get(CalibrationStoreKey(fingerprint)));
  if (!bytes) return std::optional<v1::CalibrationSet>();
  v1::CalibrationSet set;
  if (!set.ParseFromString(*bytes) || set.fingerprint() != fingerprint) {
    return DataLossError("the calibration set " + fingerprint + " in the store is unreadable");
  }
  return std::optional<v1::CalibrationSet>(std::move(set));
}

StatusOr<bool> TableStorage::StoreResult(TaskKindForKey kind, const std::string& task_id,
                                         const std::string& worker_id,
                                         const v1::CompleteTaskRequest& request) {
  auto named = [&worker_id](auto output) {
    output.set_computed_by(worker_id);
    return output.SerializeAsString();
  };
  std::string bytes;
  switch (kind) {
    case TaskKindForKey::kBaseline: bytes = named(request.baseline()); break;
    case TaskKindForKey::kEval: bytes = named(request.eval()); break;
    case TaskKindForKey::kTextWindows: bytes = named(request.text_windows()); break;
    case TaskKindForKey::kTrain:
      // Not indexed under its worker: a purge deletes numbers a worker computed, and a trained
      // model is a folder the whole gang made, not a cached number.
      return store_->SetIfAbsent(CacheKeyOf(kind, task_id), request.train().SerializeAsString());
  }
  const std::string key = CacheKeyOf(kind, task_id);
  // Indexed first: a crash between the two leaves an index entry without a result (harmless to a
  // purge), never a result its worker's purge would miss.
  RETURN_IF_ERROR(store_->ListPush(WorkerResultsStoreKey(worker_id), key));
  return store_->SetIfAbsent(key, bytes);
}

StatusOr<std::vector<std::string>> TableStorage::PurgeWorker(const std::string& worker_id) {
  const std::string index = WorkerResultsStoreKey(worker_id);
  ASSIGN_OR_RETURN(std::vector<std::string> keys, store_->ListRange(index));
  std::set<std::string> unique(keys.begin(), keys.end());
  std::vector<std::string> deleted;
  for (const std::string& key : unique) {
    ASSIGN_OR_RETURN(std::optional<std::string> bytes, store_->Get(key));
    if (!bytes) continue;
    // The index lists every result the worker reported, also those another worker stored first:
    // only the worker's own are deleted.
    if (ComputedBy(key, *bytes) != worker_id) continue;
    RETURN_IF_ERROR(store_->Delete(key));
    deleted.push_back(key.substr(key.rfind(':') + 1));
  }
  // Only the entries read: a result the worker stores meanwhile keeps its entry, for the next purge.
  RETURN_IF_ERROR(store_->ListTrimFront(index, keys.size()));
  return deleted;
}

}  // namespace dtm
