#include "coordinator/shard_affinity.h"

namespace dtm {

void ShardAffinity::Report(const std::string& worker_id, const std::vector<std::string>& tags, TimePoint now) {
  Forget(worker_id);
  Held& held = by_worker_[worker_id];
  held.at = now;
  for (const std::string& tag : tags) {
    if (held.tags.size() >= kMaxTagsPerWorker) break;
    if (tag.empty() || !held.tags.insert(tag).second) continue;
    holders_[tag].insert(worker_id);
  }
}

void ShardAffinity::Forget(const std::string& worker_id) {
  auto it = by_worker_.find(worker_id);
  if (it == by_worker_.end()) return;
  for (const std::string& tag : it->second.tags) {
    auto holders = holders_.find(tag);
    if (holders == holders_.end()) continue;
    holders->second.erase(worker_id);
    if (holders->second.empty()) holders_.erase(holders);
  }
  by_worker_.erase(it);
}

LeaseAffinity ShardAffinity::Of(const std::string& worker_id, const std::string& tag, TimePoint now,
                                std::chrono::milliseconds ttl) const {
  if (tag.empty()) return LeaseAffinity::kFree;
  auto holders = holders_.find(tag);
  if (holders == holders_.end()) return LeaseAffinity::kFree;
  if (holders->second.count(worker_id) != 0) return LeaseAffinity::kHeld;
  for (const std::string& other : holders->second) {
    auto held = by_worker_.find(other);
    if (held != by_worker_.end() && now - held->second.at <= ttl) return LeaseAffinity::kHeldElsewhere;
  }
  return LeaseAffinity::kFree;
}

}  // namespace dtm
