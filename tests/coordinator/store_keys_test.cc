// Task ids: the content hash of a task's key (coordinator/store_keys.h).
#include "coordinator/store_keys.h"

#include <gtest/gtest.h>

#include <string>

#include "common/sha256.h"

namespace dtm {
namespace {

dtm::v1::CacheKey Key(const std::string& config) {
  dtm::v1::CacheKey key;
  key.set_model_fingerprint("fp-m");
  key.set_probe_set_fingerprint("fp-p");
  key.set_prefix_len(100);
  key.set_completion_len(500);
  key.set_dtype(dtm::v1::DTYPE_BF16);
  key.mutable_config()->set_canonical(config);
  key.mutable_shard()->set_begin(0);
  key.mutable_shard()->set_end(50);
  return key;
}

// The id as the first version of the key text computed it, written out here by hand.
std::string FirstVersionEvalId(const std::string& config) {
  Sha256 hash;
  hash.Update("dtm-task-v1\nkind=eval\nmodel=fp-m\nprobes=fp-p\nprefix=100\ncompletion=500\ndtype=DTYPE_BF16\nconfig=" +
              config + "\nshard=0:50\n");
  return hash.HexDigest();
}

TEST(StoreKeysTest, IdsOfConfigsWithoutLlmInt8AreUnchanged) {
  for (const std::string config : {"", "model.layers.0.mlp.up_proj=int8-absmax",
                                   "model.layers.0.mlp.up_proj=prune:0.5,model.layers.1.mlp.up_proj=gptq:4"}) {
    EXPECT_EQ(TaskIdFor(TaskKindForKey::kEval, Key(config)), FirstVersionEvalId(config)) << config;
  }
}

TEST(StoreKeysTest, ConfigsWithLlmInt8GetNewIds) {
  // Their stored results came from the LLM.int8() before it followed bitsandbytes.
  for (const std::string config : {"model.layers.0.mlp.up_proj=llm-int8",
                                   "model.layers.0.mlp.up_proj=llm-int8,model.layers.1.mlp.up_proj=prune:0.5",
                                   "model.layers.0.mlp.up_proj=prune:0.5,model.layers.1.mlp.up_proj=llm-int8"}) {
    const std::string id = TaskIdFor(TaskKindForKey::kEval, Key(config));
    EXPECT_NE(id, FirstVersionEvalId(config)) << config;
    EXPECT_EQ(id, TaskIdFor(TaskKindForKey::kEval, Key(config))) << config;  // still a pure function
  }
}

}  // namespace
}  // namespace dtm
