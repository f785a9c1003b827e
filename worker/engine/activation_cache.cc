#include "worker/engine/activation_cache.h"

#include <utility>

namespace dtm {

int64_t ActivationCache::BytesOf(const CachedStream& stream) {
  int64_t bytes = 0;
  if (stream.hidden.defined()) bytes += static_cast<int64_t>(stream.hidden.nbytes());
  if (stream.outlier_counts.defined()) bytes += static_cast<int64_t>(stream.outlier_counts.nbytes());
  return bytes;
}

const CachedStream* ActivationCache::Find(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return nullptr;
  order_.splice(order_.begin(), order_, it->second);
  return &it->second->stream;
}

const CachedStream* ActivationCache::FindFirst(const std::vector<int>& layers,
                                               const std::function<std::string(int)>& key_of, int* found) {
  *found = 0;
  for (int layer : layers) {
    if (const CachedStream* stream = Find(key_of(layer))) {
      ++hits_;
      *found = layer;
      return stream;
    }
  }
  ++misses_;
  return nullptr;
}

bool ActivationCache::Put(const std::string& key, CachedStream stream, const std::string& group) {
  auto existing = index_.find(key);
  if (existing != index_.end()) Erase(existing->second);
  const int64_t bytes = BytesOf(stream);
  if (bytes > budget_) return false;
  while (bytes_ + bytes > budget_) EvictOldest();
  order_.push_front(Entry{key, group, std::move(stream), bytes});
  index_[key] = order_.begin();
  bytes_ += bytes;
  ++group_streams_[group];
  return true;
}

int64_t ActivationCache::StreamsOf(const std::string& group) const {
  auto it = group_streams_.find(group);
  return it == group_streams_.end() ? 0 : it->second;
}

void ActivationCache::Erase(std::list<Entry>::iterator entry) {
  bytes_ -= entry->bytes;
  auto group = group_streams_.find(entry->group);
  if (group != group_streams_.end() && --group->second <= 0) group_streams_.erase(group);
  index_.erase(entry->key);
  order_.erase(entry);
}

void ActivationCache::EvictOldest() {
  Erase(std::prev(order_.end()));
  ++evictions_;
}

void ActivationCache::Clear() {
  order_.clear();
  index_.clear();
  group_streams_.clear();
  bytes_ = 0;
}

}  // namespace dtm
