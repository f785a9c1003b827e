// The name of a probe shard of one baseline, as workers and the coordinator both compute it from an
// eval task's key: what a worker reports it keeps residual streams of (LeaseTasksRequest.held_shards)
// and what the coordinator matches queued tasks against (shard affinity). The config and the
// calibration set are left out: every config of a shard starts from that shard's streams.
#pragma once

#include <string>

#include "common/sha256.h"
#include "dtm/v1/common.pb.h"

namespace dtm {

// 16 hex digits of SHA-256 over the fields that decide the shard's baseline rows.
inline std::string ShardTag(const dtm::v1::CacheKey& key) {
  const std::string text = "shard-v1\nmodel=" + key.model_fingerprint() + "\nprobes=" + key.probe_set_fingerprint() +
                           "\nprefix=" + std::to_string(key.prefix_len()) +
                           "\ncompletion=" + std::to_string(key.completion_len()) +
                           "\ndtype=" + std::to_string(static_cast<int>(key.dtype())) +
                           "\nshard=" + std::to_string(key.shard().begin()) + "-" + std::to_string(key.shard().end());
  return Sha256Hex(text).substr(0, 16);
}

}  // namespace dtm
