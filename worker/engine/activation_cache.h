// Residual streams kept for reuse (SPEC "Shape of the work"): the input of decoder layer l for one
// batch of one baseline shard, under the config's entries below l. A config that changes nothing
// below layer L computes exactly the same stream at L as any other config that agrees with it below
// L (the uncompressed model for a one-component probe; the parent node for a tree-search child), so
// the forward starts there. The key holds everything that decides the stream, so a hit is the very
// tensor a full forward would compute and the results stay identical; a miss (never stored, or
// evicted) only costs the layers below.
//
// Memory: one stream is [B, T, D] in the compute dtype, e.g. 8 probes x 600 tokens x 4096 x 2 bytes
// = 39 MB for Llama-2-7B in fp16, 1.3 GB for every layer of one such batch; a 1000-probe job's
// every layer would be 160 GB. Hence the byte budget with least-recently-used eviction, and the
// option to keep only every k-th layer (Evaluator::SetActivationCache).
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <string>
#include <unordered_map>
#include <vector>

#include <torch/torch.h>

namespace dtm {

struct CachedStream {
  torch::Tensor hidden;          // [B, T, D]: the input of the layer, compute dtype, on the model's device
  torch::Tensor outlier_counts;  // [B] int64: LLM.int8() outlier columns counted below the layer; or undefined for none
};

// Not thread-safe: one per evaluator.
class ActivationCache {
 public:
  explicit ActivationCache(int64_t budget_bytes) : budget_(budget_bytes < 0 ? 0 : budget_bytes) {}
  ActivationCache(const ActivationCache&) = delete;
  ActivationCache& operator=(const ActivationCache&) = delete;

  // The stream stored under `key`, or null; a hit becomes the most recently used.
  const CachedStream* Find(const std::string& key);
  // The stream of the first of `layers` whose key_of(layer) is stored (pass the deepest first), and
  // that layer in *found; null and *found = 0 when none is. Counts one hit or one miss.
  const CachedStream* FindFirst(const std::vector<int>& layers, const std::function<std::string(int)>& key_of,
                                int* found);
  // Whether `key` is stored, without touching the order or the counts.
  bool Contains(const std::string& key) const { return index_.count(key) > 0; }
  // Keeps `stream` under `key` (replacing an earlier one), evicting the least recently used until it
  // fits the budget. A stream larger than the whole budget is not kept; returns whether it was.
  // `group` names the streams of one set of rows (a shard), for StreamsOf.
  bool Put(const std::string& key, CachedStream stream, const std::string& group = "");
  // How many streams of `group` are kept now.
  int64_t StreamsOf(const std::string& group) const;
  void Clear();

  int64_t budget() const { return budget_; }
  int64_t bytes() const { return bytes_; }
  size_t size() const { return index_.size(); }
  int64_t hits() const { return hits_; }
  int64_t misses() const { return misses_; }
  int64_t evictions() const { return evictions_; }

  static int64_t BytesOf(const CachedStream& stream);

 private:
  struct Entry {
    std::string key;
    std::string group;
    CachedStream stream;
    int64_t bytes = 0;
  };
  void Erase(std::list<Entry>::iterator entry);
  void EvictOldest();

  int64_t budget_;
  int64_t bytes_ = 0;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<std::string, std::list<Entry>::iterator> index_;
  std::unordered_map<std::string, int64_t> group_streams_;
  int64_t hits_ = 0;
  int64_t misses_ = 0;
  int64_t evictions_ = 0;
};

}  // namespace dtm
