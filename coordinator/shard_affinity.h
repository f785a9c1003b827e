// ShardAffinity: which workers keep residual streams of which shards (LeaseTasksRequest.held_shards,
// common/shard_tag.h), so that a shard's eval tasks go to a worker that starts them above layer 0
// (worker/engine/activation_cache.h). A hint, never a constraint: LeaseTable gives a task held
// elsewhere to anyone once it has waited LeaseTable::Options::affinity_wait_ms (or to a worker that
// would otherwise idle), and a report older
// than `ttl` counts for nothing (its worker may be gone).
//
// Thread-safety: none; CoordinatorState::mu guards it.
#pragma once

#include <chrono>
#include <map>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "coordinator/lease_table.h"

namespace dtm {

class ShardAffinity {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;

  // At most this many tags of one report are kept (the rest are ignored): a lying worker cannot
  // grow the coordinator's memory.
  static constexpr size_t kMaxTagsPerWorker = 1024;

  // Replaces what `worker_id` holds.
  void Report(const std::string& worker_id, const std::vector<std::string>& tags, TimePoint now);
  void Forget(const std::string& worker_id);
  // Whether any worker reported a shard: without one, leasing needs no affinity (and no scan).
  bool AnyHeld() const { return !holders_.empty(); }

  // kHeld when `worker_id` reported `tag`; kHeldElsewhere when another worker did within `ttl`;
  // else kFree. An empty tag (a task of no shard) is kFree.
  LeaseAffinity Of(const std::string& worker_id, const std::string& tag, TimePoint now,
                   std::chrono::milliseconds ttl) const;

 private:
  struct Held {
    std::set<std::string> tags;
    TimePoint at;
  };
  std::map<std::string, Held> by_worker_;
  std::unordered_map<std::string, std::set<std::string>> holders_;  // tag -> workers that reported it
};

}  // namespace dtm
