#include "worker/engine/probes.h"

#include <fstream>

#include <gtest/gtest.h>

#include "tests/worker/engine/test_models.h"
#include "worker/engine/baseline.h"
#include "worker/engine/bpe_trainer.h"
#include "common/jsonl.h"
#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

class ProbesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<std::string> texts = {"the cat sat on the mat and the dog sat on the log",
                                      "a quick brown fox jumps over the lazy dog again and again"};
    BpeTrainerOptions options;
    options.vocab_size = 320;
    ASSERT_TRUE(BpeModel::Train(texts, options).WriteHfTokenizerJson(dir_.File("tokenizer.json")).ok());
    auto tokenizer = Tokenizer::FromHfJsonFile(dir_.File("tokenizer.json"));
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    tokenizer_ = std::move(*tokenizer);
  }

  std::string Write(const std::string& name, const std::string& text) {
    EXPECT_TRUE(WriteTextFile(dir_.File(name), text).ok());
    return dir_.File(name);
  }

  testing::TempDir dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

TEST_F(ProbesTest, CutsPrefixesOfExactlyNTokensStartingWithBos) {
  std::string corpus = Write("text.txt", "the cat sat on the mat\nand the dog sat on the log\n\nthe lazy dog\nagain and again\nthe fox\n");
  MakeProbesOptions options;
  options.count = 2;
  options.prefix_len = 8;
  StatusOr<ProbeSet> set = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  ASSERT_EQ(set->probes.size(), 2u);
  for (const Probe& p : set->probes) {
    EXPECT_EQ(p.tokens.size(), 8u);
    EXPECT_EQ(p.tokens[0], tokenizer_->bos_id());
  }
  EXPECT_EQ(set->probes[0].id, "text.txt:1");
  // The first probe is the encoding of its lines' text, cut to n.
  std::vector<int32_t> expected = tokenizer_->Encode("the cat sat on the mat", true);
  if (expected.size() < 8) expected = tokenizer_->Encode("the cat sat on the mat and the dog sat on the log", true);
  expected.resize(8);
  EXPECT_EQ(set->probes[0].tokens, expected);
}

TEST_F(ProbesTest, ReadsC4StyleJsonLinesPlainAndGzipped) {
  const std::string lines =
      "{\"text\": \"the cat sat on the mat and the dog sat on the log\", \"url\": \"x\"}\n"
      "{\"text\": \"a\"}\n"
      "{\"text\": \"a quick brown fox jumps over the lazy dog again\"}\n";
  for (const char* name : {"c4.jsonl", "c4.json.gz"}) {
    MakeProbesOptions options;
    options.count = 2;
    options.prefix_len = 6;
    StatusOr<ProbeSet> set = MakeProbes(Write(name, lines), *tokenizer_, options);
    ASSERT_TRUE(set.ok()) << name << ": " << set.status().ToString();
    ASSERT_EQ(set->probes.size(), 2u);
    // The short document is skipped.
    EXPECT_EQ(set->probes[1].id, std::string(name) + ":3");
  }
}

TEST_F(ProbesTest, WikitextSkipsHeadingsAndBlankLines) {
  std::string corpus = Write("wiki.raw", " = Cats = \n\n the cat sat on the mat and the dog sat on the log \n = = Dogs = = \n");
  MakeProbesOptions options;
  options.count = 1;
  options.prefix_len = 5;
  options.format = CorpusFormat::kWikitext;
  StatusOr<ProbeSet> set = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->probes[0].id, "wiki.raw:3");
}

TEST_F(ProbesTest, PrefixLongerThanTheTextIsAClearError) {
  std::string corpus = Write("small.txt", "the cat\n");
  MakeProbesOptions options;
  options.count = 1;
  options.prefix_len = 500;
  StatusOr<ProbeSet> set = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("small.txt"), std::string::npos);
  EXPECT_NE(set.status().message().find("only 0 probes"), std::string::npos) << set.status().message();
}

TEST_F(ProbesTest, ProbeFilesRoundTripAndFingerprintTheContent) {
  ProbeSet set{{{"a", {1, 5, 6}}, {"b", {1, 7}}}};
  for (const char* name : {"p.jsonl", "p.jsonl.gz"}) {
    ASSERT_TRUE(WriteProbeFile(dir_.File(name), set).ok());
    StatusOr<ProbeSet> back = ReadProbeFile(dir_.File(name));
    ASSERT_TRUE(back.ok()) << back.status().ToString();
    EXPECT_EQ(back->Fingerprint(), set.Fingerprint());
    EXPECT_EQ(back->probes[1].tokens, (std::vector<int32_t>{1, 7}));
  }
  ProbeSet other = set;
  other.probes[1].tokens[1] = 8;
  EXPECT_NE(other.Fingerprint(), set.Fingerprint());
}

TEST_F(ProbesTest, RejectsMalformedProbeFilesNamingTheFile) {
  for (const char* text : {"{\"id\": \"a\"}\n", "{\"id\": 3, \"tokens\": [1]}\n", "{\"id\": \"a\", \"tokens\": [-1]}\n",
                           "not json\n", ""}) {
    std::string path = Write("bad.jsonl", text);
    StatusOr<ProbeSet> set = ReadProbeFile(path);
    ASSERT_FALSE(set.ok()) << text;
    EXPECT_NE(set.status().message().find("bad.jsonl"), std::string::npos) << set.status().message();
  }
}

TEST_F(ProbesTest, BaselineFilesRoundTripAndRejectBadRows) {
  Baseline baseline{{BaselineRow{"a", 2, {1, 5, 6, 7}}, BaselineRow{"b", 1, {1, 9}}}};
  ASSERT_TRUE(WriteBaselineFile(dir_.File("b.jsonl.gz"), baseline).ok());
  StatusOr<Baseline> back = ReadBaselineFile(dir_.File("b.jsonl.gz"));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(back->Fingerprint(), baseline.Fingerprint());
  EXPECT_EQ(back->rows[0].completion_len(), 2);
  for (const char* text : {"{\"id\": \"a\", \"prefix_len\": 3, \"tokens\": [1, 2, 3]}\n",
                           "{\"id\": \"a\", \"prefix_len\": 0, \"tokens\": [1, 2]}\n",
                           "{\"id\": \"a\", \"tokens\": [1, 2]}\n"}) {
    StatusOr<Baseline> bad = ReadBaselineFile(Write("bad.jsonl", text));
    ASSERT_FALSE(bad.ok()) << text;
    EXPECT_NE(bad.status().message().find("bad.jsonl"), std::string::npos);
  }
}

TEST(BatchRowsTest, GroupsEqualShapesInFirstAppearanceOrder) {
  std::vector<std::vector<size_t>> batches = BatchRows({{2, 5}, {3, 5}, {2, 5}, {2, 5}, {3, 5}}, 2);
  EXPECT_EQ(batches, (std::vector<std::vector<size_t>>{{0, 2}, {1, 4}, {3}}));
}

}  // namespace
}  // namespace dtm
