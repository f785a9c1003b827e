// coordinator/store_keys: the task id is the hash of what determines a result (ARCHITECTURE "Keys"):
// the calibration set is part of it exactly when the config uses gptq (SPEC gptq), and configs with
// llm-int8 got new ids when LLM.int8() came to follow bitsandbytes.
#include "coordinator/store_keys.h"

#include <gtest/gtest.h>

#include <string>

#include "common/sha256.h"

namespace dtm {
namespace {

v1::CacheKey Base() {
  v1::CacheKey key;
  key.set_model_fingerprint("m1");
  key.set_probe_set_fingerprint("p1");
  key.set_prefix_len(100);
  key.set_completion_len(500);
  key.set_dtype(v1::DTYPE_BF16);
  key.set_calibration_fingerprint(std::string(64, 'c'));
  return key;
}

TEST(StoreKeysTest, IdsOfTasksWithoutGptqAreTheHashOfTheDocumentedTextAsBeforeCalibrationExisted) {
  // The cached results of every earlier job stay found: their ids are what they always were.
  const v1::CacheKey key = ShardKey(Base(), "model.layers.0.mlp.up_proj=int8-absmax", 50, 100);
  EXPECT_TRUE(key.calibration_fingerprint().empty());
  Sha256 hash;
  hash.Update("dtm-task-v1\nkind=eval\nmodel=m1\nprobes=p1\nprefix=100\ncompletion=500\ndtype=DTYPE_BF16\n"
              "config=model.layers.0.mlp.up_proj=int8-absmax\nshard=50:100\n");
  EXPECT_EQ(TaskIdFor(TaskKindForKey::kEval, key), hash.HexDigest());
  const v1::CacheKey baseline = ShardKey(Base(), "", 0, 50);
  EXPECT_TRUE(baseline.calibration_fingerprint().empty());
  EXPECT_EQ(baseline.config().canonical(), "");
}

TEST(StoreKeysTest, AGptqTaskIdNamesItsCalibrationSet) {
  const std::string config = "model.layers.0.mlp.up_proj=gptq:4,model.layers.1.mlp.up_proj=int8-absmax";
  const v1::CacheKey key = ShardKey(Base(), config, 0, 50);
  EXPECT_EQ(key.calibration_fingerprint(), std::string(64, 'c'));
  v1::CacheKey other = key;
  other.set_calibration_fingerprint(std::string(64, 'd'));
  EXPECT_NE(TaskIdFor(TaskKindForKey::kEval, key), TaskIdFor(TaskKindForKey::kEval, other));
  EXPECT_EQ(TaskIdFor(TaskKindForKey::kEval, key), TaskIdFor(TaskKindForKey::kEval, ShardKey(Base(), config, 0, 50)));
  Sha256 hash;
  hash.Update("dtm-task-v1\nkind=eval\nmodel=m1\nprobes=p1\nprefix=100\ncompletion=500\ndtype=DTYPE_BF16\nconfig=" +
              config + "\ncalibration=" + std::string(64, 'c') + "\nshard=0:50\n");
  EXPECT_EQ(TaskIdFor(TaskKindForKey::kEval, key), hash.HexDigest());
}


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

// SPEC `ppl`: a text's windows are a task of their own kind, keyed by the text and the window.
TEST(StoreKeysTest, TextWindowsTasksHaveIdsOfTheirOwnKindAndKeyTheTextAndWindow) {
  v1::CacheKey key = ShardKey(Base(), "", 0, 0);
  key.set_probe_set_fingerprint(PplTextFingerprint("rows", "some text\n"));
  key.set_prefix_len(1);
  key.set_completion_len(2047);
  Sha256 hash;
  hash.Update("dtm-task-v1\nkind=text-windows\nmodel=m1\nprobes=" + key.probe_set_fingerprint() +
              "\nprefix=1\ncompletion=2047\ndtype=DTYPE_BF16\nshard=0:0\n");
  EXPECT_EQ(TaskIdFor(TaskKindForKey::kTextWindows, key), hash.HexDigest());
  EXPECT_NE(TaskIdFor(TaskKindForKey::kTextWindows, key), TaskIdFor(TaskKindForKey::kBaseline, key));
  EXPECT_NE(TaskIdFor(TaskKindForKey::kTextWindows, key), TaskIdFor(TaskKindForKey::kEval, key));
  // The join mode and every byte of the text name it.
  EXPECT_NE(PplTextFingerprint("rows", "some text\n"), PplTextFingerprint("as-is", "some text\n"));
  EXPECT_NE(PplTextFingerprint("rows", "some text\n"), PplTextFingerprint("rows", "some text \n"));
  EXPECT_EQ(PplTextFingerprint("rows", "some text\n"), PplTextFingerprint("rows", "some text\n"));
  EXPECT_EQ(TextWindowsStoreKey("abc"), "dtm:v1:text-windows:abc");
}

// `reference:`: an eval shard measured against another model's baseline has its own id, named by
// both fingerprints, under the documented text.
TEST(StoreKeysTest, AReferenceBaselineFingerprintNamesTheReferenceAndTheProbes) {
  Sha256 hash;
  hash.Update("dtm-reference-baseline-v1\nreference=ref\nprobes=p1\n");
  const std::string fp = ReferenceBaselineFingerprint("ref", "p1");
  EXPECT_EQ(fp, hash.HexDigest());
  EXPECT_NE(fp, ReferenceBaselineFingerprint("ref2", "p1"));
  EXPECT_NE(fp, ReferenceBaselineFingerprint("ref", "p2"));
  EXPECT_NE(fp, ReferenceBaselineFingerprint("p1", "ref"));
  v1::CacheKey against = Base();
  against.set_probe_set_fingerprint(fp);
  EXPECT_NE(TaskIdFor(TaskKindForKey::kEval, ShardKey(against, "", 0, 4)),
            TaskIdFor(TaskKindForKey::kEval, ShardKey(Base(), "", 0, 4)));
}

TEST(StoreKeysTest, TheWindowsFingerprintNamesTheWindowLengthAndEveryToken) {
  v1::TextWindowsOutput windows;
  for (uint32_t w = 0; w < 2; ++w) {
    v1::TokenSequence* seq = windows.add_windows();
    for (uint32_t t = 0; t < 4; ++t) seq->add_tokens(10 * w + t);
  }
  const std::string fp = PplWindowsFingerprint(4, windows);
  EXPECT_EQ(fp.size(), 64u);
  EXPECT_EQ(fp, PplWindowsFingerprint(4, windows));
  EXPECT_NE(fp, PplWindowsFingerprint(5, windows));
  v1::TextWindowsOutput changed = windows;
  changed.mutable_windows(1)->set_tokens(3, 99);
  EXPECT_NE(fp, PplWindowsFingerprint(4, changed));
  // Tokens moved across a window boundary make other windows.
  v1::TextWindowsOutput moved;
  moved.add_windows()->add_tokens(0);
  for (uint32_t t : {1, 2, 3}) moved.mutable_windows(0)->add_tokens(t);
  moved.add_windows();
  for (uint32_t t : {10, 11, 12, 13}) moved.mutable_windows(1)->add_tokens(t);
  EXPECT_EQ(PplWindowsFingerprint(4, moved), fp);  // the same windows built another way
  moved.mutable_windows(0)->add_tokens(10);
  moved.mutable_windows(1)->mutable_tokens()->erase(moved.mutable_windows(1)->mutable_tokens()->begin());
  EXPECT_NE(PplWindowsFingerprint(4, moved), fp);
}

}  // namespace
}  // namespace dtm
