// WorkerRegistry: the workers connected to the coordinator and the models they serve (the node
// manager of Ray's GCS). Workers are grouped in pools by (model fingerprint, dtype): a worker is only
// ever handed tasks of its pool. Models are named by path in job specs; the registry learns each
// (path, dtype)'s fingerprint and geometry from the workers serving it, and remembers them (the
// store keeps them across restarts, written by the caller).
//
// Thread-safety: not thread-safe; its owner (the Scheduler) calls it under its own mutex. It does no
// I/O.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "coordinator/model_geometry.h"
#include "dtm/v1/worker_service.pb.h"

namespace dtm {

struct ModelInfo {
  std::string fingerprint;
  ModelGeometry geometry;
};

// The pool of a (model fingerprint, dtype): the workers that can run a task of that model.
std::string PoolName(const std::string& fingerprint, dtm::v1::Dtype dtype);

// "build/tiny-model/" and "/work/build/tiny-model" name one model: absolute and lexically normal.
std::string NormalModelPath(const std::string& path);

class WorkerRegistry {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  struct Worker {
    std::string pool;
    std::string model_path;
    dtm::v1::Dtype dtype = dtm::v1::DTYPE_UNSPECIFIED;
    std::string gang_address;  // where its rendezvous store listens as a gang's rank 0; "" = no gangs
    std::string model_root;    // it loads models under this folder when asked; "" = it never switches
    std::map<std::string, std::string> refused;  // model paths it refused to load, and why (kept across registrations)
    TimePoint last_seen;
  };

  // What a registration changed.
  struct Registration {
    // The worker was registered already (a restart, or a retried call): the caller releases the
    // leases of the earlier registration in `previous_pool`.
    bool replaced = false;
    std::string previous_pool;
    // The (path, dtype) learnt a new fingerprint or geometry: the caller persists it.
    bool model_changed = false;
    std::string model_path;
  };

  // INVALID_ARGUMENT for a request without worker id, fingerprint, dtype or layers, or with an
  // unreasonable field (the messages name it); FAILED_PRECONDITION for an incompatible version.
  static Status Validate(const dtm::v1::RegisterWorkerRequest& request);

  // Registers (or registers again) a validated worker, seen at `now`.
  Registration Register(const dtm::v1::RegisterWorkerRequest& request, TimePoint now);

  // The worker, marked seen at `now`; nullptr when not registered.
  Worker* Touch(const std::string& worker_id, TimePoint now);
  const Worker* Find(const std::string& worker_id) const;
  void Remove(const std::string& worker_id);
  // Removes the workers not seen since `cutoff`; returns them with their pools.
  std::vector<std::pair<std::string, std::string>> RemoveSilentSince(TimePoint cutoff);
  size_t size() const { return workers_.size(); }
  // The ids of the workers in `pool`.
  std::set<std::string> WorkersOf(const std::string& pool) const;
  // Of those, the ones that can join a gang (they have a gang address).
  int GangCapableIn(const std::string& pool) const;
  // A model a job needs, and how many workers must serve it: 1, or a train job's gang (members
  // with a gang address).
  struct ModelNeed {
    std::string path;  // normal, as NormalModelPath gives it
    int workers = 1;
    bool gang = false;
  };
  // The model folder an idle `worker` should load, of `wanted` (in order of need): the first that
  // fewer connected workers serve than it needs (for a gang, fewer gang-capable ones, and then only
  // a gang-capable worker is asked), that lies under the worker's model root (lexically; the worker
  // checks the real path) and that it has not refused; "" for none.
  std::string ModelToLoad(const Worker& worker, const std::vector<ModelNeed>& wanted) const;
  // "; workers with --model-root refused it: W (why)" for a model path, or "" (for error messages).
  std::string RefusalsOf(const std::string& path) const;

  // Models: what workers have reported, and what the store held at start.
  void LoadModel(const std::string& path, dtm::v1::Dtype dtype, ModelInfo info);
  // The model a spec names (its normal path and, when not unspecified, dtype) and the dtype it is
  // served in. NOT_FOUND when no worker has served it.
  StatusOr<std::pair<ModelInfo, dtm::v1::Dtype>> FindModel(const std::string& path,
                                                           dtm::v1::Dtype dtype) const;
  const ModelInfo* Model(const std::string& path, dtm::v1::Dtype dtype) const;
  // The component sizes some worker reported for the model with this fingerprint; empty when none.
  std::map<std::string, uint64_t> ComponentParamsOf(const std::string& fingerprint) const;
  // "workers serve A, B" or "no worker is connected", for errors about a model nobody serves.
  std::string ServedModels() const;

 private:
  std::map<std::string, Worker> workers_;                    // by worker id
  std::map<std::pair<std::string, int>, ModelInfo> models_;  // (path, dtype) -> model
};

}  // namespace dtm
