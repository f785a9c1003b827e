#include "coordinator/worker_registry.h"

#include <filesystem>

#include "common/user_text.h"
#include "common/version.h"

namespace dtm {
namespace {

// Bounds on what a worker reports, so that a misbehaving one cannot make the registry hold
// megabytes; Llama-2-70B has 80 layers.
constexpr size_t kMaxIdBytes = 256;
constexpr size_t kMaxPathBytes = 4096;
constexpr uint32_t kMaxLayers = 1 << 12;

}  // namespace

std::string PoolName(const std::string& fingerprint, v1::Dtype dtype) {
  return fingerprint + "|" + v1::Dtype_Name(dtype);
}

std::string NormalModelPath(const std::string& path) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(path, ec);
  if (ec) p = path;
  std::string s = p.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

Status WorkerRegistry::Validate(const v1::RegisterWorkerRequest& request) {
  if (request.worker_id().empty()) return InvalidArgumentError("worker_id is empty");
  if (request.worker_id().size() > kMaxIdBytes) {
    return InvalidArgumentError("worker_id is longer than " + std::to_string(kMaxIdBytes) + " bytes");
  }
  if (request.model_fingerprint().empty() || request.model_fingerprint().size() > kMaxIdBytes) {
    return InvalidArgumentError("model_fingerprint is empty or longer than " + std::to_string(kMaxIdBytes) +
                                " bytes");
  }
  if (request.gang_address().size() > 300) return InvalidArgumentError("gang_address is longer than 300 bytes");
  if (request.model_root().size() > kMaxPathBytes || request.refused_model_path().size() > kMaxPathBytes ||
      request.refused_reason().size() > 1000) {
    return InvalidArgumentError("model_root, refused_model_path or refused_reason is too long");
  }
  if (request.model_path().size() > kMaxPathBytes) {
    return InvalidArgumentError("model_path is longer than " + std::to_string(kMaxPathBytes) + " bytes");
  }
  if (request.dtype() == v1::DTYPE_UNSPECIFIED || !v1::Dtype_IsValid(request.dtype())) {
    return InvalidArgumentError("dtype is unspecified");
  }
  if (request.num_layers() == 0 || request.num_layers() > kMaxLayers) {
    return InvalidArgumentError("num_layers " + std::to_string(request.num_layers()) + " is not in 1.." +
                                std::to_string(kMaxLayers));
  }
  if (request.component_params_size() > static_cast<int>(request.num_layers()) * 7) {
    return InvalidArgumentError("component_params names more components than " +
                                std::to_string(request.num_layers()) + " layers have");
  }
  for (const auto& component : request.component_params()) {
    if (component.first.size() > kMaxIdBytes) {
      return InvalidArgumentError("component_params names a component of " + std::to_string(component.first.size()) +
                                  " bytes");
    }
  }
  if (!IsCompatibleWorkerVersion(request.version())) {
    return FailedPreconditionError("worker " + Quoted(request.worker_id()) + " runs dtm " +
                                   Quoted(request.version()) + "; this coordinator runs " + kDtmVersion +
                                   " and takes workers of the same MAJOR.MINOR only");
  }
  return OkStatus();
}

WorkerRegistry::Registration WorkerRegistry::Register(const v1::RegisterWorkerRequest& request,
                                                      TimePoint now) {
  Registration out;
  const std::string path = NormalModelPath(request.model_path());
  auto [it, inserted] = workers_.try_emplace(request.worker_id());
  if (!inserted) {
    out.replaced = true;
    out.previous_pool = it->second.pool;
  }
  Worker& worker = it->second;
  if (!request.refused_model_path().empty()) {
    worker.refused[NormalModelPath(request.refused_model_path())] = request.refused_reason();
  }
  worker.model_root = request.model_root().empty() ? "" : NormalModelPath(request.model_root());
  worker.pool = PoolName(request.model_fingerprint(), request.dtype());
  worker.model_path = path;
  worker.gang_address = request.gang_address();
  worker.dtype = request.dtype();
  worker.last_seen = now;

  ModelInfo info{request.model_fingerprint(), {static_cast<int>(request.num_layers()), {}}};
  info.geometry.component_params.insert(request.component_params().begin(), request.component_params().end());
  ModelInfo& known = models_[{path, request.dtype()}];
  if (known.fingerprint != info.fingerprint || known.geometry.num_layers != info.geometry.num_layers ||
      known.geometry.component_params != info.geometry.component_params) {
    known = std::move(info);
    out.model_changed = true;
    out.model_path = path;
  }
  return out;
}

WorkerRegistry::Worker* WorkerRegistry::Touch(const std::string& worker_id, TimePoint now) {
  auto it = workers_.find(worker_id);
  if (it == workers_.end()) return nullptr;
  it->second.last_seen = now;
  return &it->second;
}

const WorkerRegistry::Worker* WorkerRegistry::Find(const std::string& worker_id) const {
  auto it = workers_.find(worker_id);
  return it == workers_.end() ? nullptr : &it->second;
}

void WorkerRegistry::Remove(const std::string& worker_id) { workers_.erase(worker_id); }

std::vector<std::pair<std::string, std::string>> WorkerRegistry::RemoveSilentSince(TimePoint cutoff) {
  std::vector<std::pair<std::string, std::string>> removed;
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (it->second.last_seen < cutoff) {
      removed.emplace_back(it->first, it->second.pool);
      it = workers_.erase(it);
    } else {
      ++it;
    }
  }
  return removed;
}

std::set<std::string> WorkerRegistry::WorkersOf(const std::string& pool) const {
  std::set<std::string> ids;
  for (const auto& [id, worker] : workers_) {
    if (worker.pool == pool) ids.insert(id);
  }
  return ids;
}

int WorkerRegistry::GangCapableIn(const std::string& pool) const {
  int n = 0;
  for (const auto& [id, worker] : workers_) n += worker.pool == pool && !worker.gang_address.empty();
  return n;
}

std::string WorkerRegistry::ModelToLoad(const Worker& worker, const std::vector<ModelNeed>& wanted) const {
  if (worker.model_root.empty()) return "";
  const std::string prefix = worker.model_root == "/" ? "/" : worker.model_root + "/";
  for (const ModelNeed& need : wanted) {
    if (need.path.rfind(prefix, 0) != 0 || worker.refused.count(need.path) > 0) continue;
    if (worker.model_path == need.path || (need.gang && worker.gang_address.empty())) continue;
    int serving = 0;
    for (const auto& [id, other] : workers_) {
      serving += other.model_path == need.path && (!need.gang || !other.gang_address.empty());
    }
    if (serving < need.workers) return need.path;
  }
  return "";
}

std::string WorkerRegistry::RefusalsOf(const std::string& path) const {
  std::string out;
  for (const auto& [id, worker] : workers_) {
    auto it = worker.refused.find(path);
    if (it != worker.refused.end()) out += (out.empty() ? "" : ", ") + id + " (" + it->second + ")";
  }
  return out.empty() ? "" : "; workers with --model-root refused it: " + out;
}

void WorkerRegistry::LoadModel(const std::string& path, v1::Dtype dtype, ModelInfo info) {
  models_[{path, dtype}] = std::move(info);
}

StatusOr<std::pair<ModelInfo, v1::Dtype>> WorkerRegistry::FindModel(const std::string& path,
                                                                    v1::Dtype dtype) const {
  if (dtype != v1::DTYPE_UNSPECIFIED) {
    auto it = models_.find({path, dtype});
    if (it == models_.end())
      return NotFoundError("no worker has served " + path + " in " + v1::Dtype_Name(dtype));
    return std::make_pair(it->second, dtype);
  }
  for (const auto& [key, info] : models_) {
    if (key.first == path) return std::make_pair(info, static_cast<v1::Dtype>(key.second));
  }
  return NotFoundError("no worker has served " + path);
}

const ModelInfo* WorkerRegistry::Model(const std::string& path, v1::Dtype dtype) const {
  auto it = models_.find({path, dtype});
  return it == models_.end() ? nullptr : &it->second;
}

std::map<std::string, uint64_t> WorkerRegistry::ComponentParamsOf(const std::string& fingerprint) const {
  for (const auto& [key, info] : models_) {
    if (info.fingerprint == fingerprint && !info.geometry.component_params.empty())
      return info.geometry.component_params;
  }
  return {};
}

std::string WorkerRegistry::ServedModels() const {
  std::set<std::string> served;
  for (const auto& [id, worker] : workers_) served.insert(worker.model_path);
  if (served.empty()) return "no worker is connected";
  std::string out = "workers serve";
  const char* separator = " ";
  for (const std::string& path : served) {
    out += separator + path;
    separator = ", ";
  }
  return out;
}

}  // namespace dtm
