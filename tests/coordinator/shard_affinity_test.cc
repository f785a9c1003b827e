#include "coordinator/shard_affinity.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/shard_tag.h"

namespace dtm {
namespace {

using std::chrono::milliseconds;

TEST(ShardAffinityTest, AShardIsHeldByItsReporterAndElsewhereForOthersUntilTheReportIsStale) {
  ShardAffinity affinity;
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  const milliseconds ttl(1000);
  EXPECT_FALSE(affinity.AnyHeld());
  affinity.Report("w1", {"s1", "s2"}, t0);
  EXPECT_TRUE(affinity.AnyHeld());
  EXPECT_EQ(affinity.Of("w1", "s1", t0, ttl), LeaseAffinity::kHeld);
  EXPECT_EQ(affinity.Of("w2", "s1", t0, ttl), LeaseAffinity::kHeldElsewhere);
  EXPECT_EQ(affinity.Of("w2", "s3", t0, ttl), LeaseAffinity::kFree);
  EXPECT_EQ(affinity.Of("w2", "", t0, ttl), LeaseAffinity::kFree);
  // A worker that stopped reporting (gone, or busy for longer than a lease) holds nothing for others.
  EXPECT_EQ(affinity.Of("w2", "s1", t0 + milliseconds(1001), ttl), LeaseAffinity::kFree);
  // A new report replaces the old one.
  affinity.Report("w1", {"s2"}, t0);
  EXPECT_EQ(affinity.Of("w2", "s1", t0, ttl), LeaseAffinity::kFree);
  EXPECT_EQ(affinity.Of("w2", "s2", t0, ttl), LeaseAffinity::kHeldElsewhere);
  affinity.Forget("w1");
  EXPECT_EQ(affinity.Of("w2", "s2", t0, ttl), LeaseAffinity::kFree);
  EXPECT_FALSE(affinity.AnyHeld());
}

TEST(ShardAffinityTest, KeepsAtMostTheLimitOfOneWorkersTags) {
  ShardAffinity affinity;
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  std::vector<std::string> tags;
  for (size_t i = 0; i < ShardAffinity::kMaxTagsPerWorker + 10; ++i) tags.push_back("tag" + std::to_string(i));
  affinity.Report("liar", tags, t0);
  EXPECT_EQ(affinity.Of("liar", "tag0", t0, milliseconds(1000)), LeaseAffinity::kHeld);
  EXPECT_EQ(affinity.Of("liar", tags.back(), t0, milliseconds(1000)), LeaseAffinity::kFree);
}

TEST(ShardTagTest, NamesTheShardWhateverTheConfigOrCalibration) {
  dtm::v1::CacheKey a;
  a.set_model_fingerprint("m");
  a.set_probe_set_fingerprint("p");
  a.set_prefix_len(32);
  a.set_completion_len(96);
  a.mutable_shard()->set_begin(0);
  a.mutable_shard()->set_end(16);
  dtm::v1::CacheKey b = a;
  b.mutable_config()->set_canonical("model.layers.0.mlp.up_proj=int8-absmax");
  b.set_calibration_fingerprint("c");
  EXPECT_EQ(ShardTag(a), ShardTag(b));
  EXPECT_EQ(ShardTag(a).size(), 16u);
  b.mutable_shard()->set_begin(16);
  b.mutable_shard()->set_end(32);
  EXPECT_NE(ShardTag(a), ShardTag(b));
  b = a;
  b.set_completion_len(95);
  EXPECT_NE(ShardTag(a), ShardTag(b));
}

}  // namespace
}  // namespace dtm
