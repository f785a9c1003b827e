#include "worker/engine/probes.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <string>
#include <vector>

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
    auto tokenizer = testing::TinyTestTokenizer(dir_);
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

TEST(ProbeSampleKeyTest, IsSplitMix64) {
  // The reference outputs of SplitMix64 (Vigna's splitmix64.c; Java's SplittableRandom), also
  // computed by a Python transcription: seed 0 gives these three, seed 1234567 this one first.
  EXPECT_EQ(ProbeSampleKey(0, 0), 0xE220A8397B1DCDAFULL);
  EXPECT_EQ(ProbeSampleKey(0, 1), 0x6E789E6AA1B965F4ULL);
  EXPECT_EQ(ProbeSampleKey(0, 2), 0x06C45D188009454FULL);
  EXPECT_EQ(ProbeSampleKey(1234567, 0), 0x599ED017FB08FC85ULL);
}

TEST(ProbeSamplingTest, ParsesItsNames) {
  EXPECT_EQ(*ParseProbeSampling("first"), ProbeSampling::kFirst);
  EXPECT_EQ(*ParseProbeSampling("random"), ProbeSampling::kRandom);
  StatusOr<ProbeSampling> bad = ParseProbeSampling("shuffle");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'shuffle'"), std::string::npos) << bad.status().message();
}

// 60 documents, one a line; every 7th is too short for a probe (line numbers 1, 8, 15, ...).
constexpr int kDocuments = 60;
bool IsShortDocument(int line) { return line % 7 == 1; }

std::string SampleCorpus() {
  std::string lines;
  for (int line = 1; line <= kDocuments; ++line) {
    if (IsShortDocument(line)) {
      lines += "{\"text\": \"a\"}\n";
    } else {
      lines += "{\"text\": \"" + std::to_string(line) + " the cat sat on the mat and the dog sat on the log\"}\n";
    }
  }
  return lines;
}

std::vector<std::string> Ids(const ProbeSet& set) {
  std::vector<std::string> ids;
  for (const Probe& p : set.probes) ids.push_back(p.id);
  return ids;
}

TEST_F(ProbesTest, RandomSamplingTakesTheDocumentsOfTheSmallestKeysWithoutReplacement) {
  const std::string corpus = Write("c4.jsonl", SampleCorpus());
  MakeProbesOptions options;
  options.count = 12;
  options.prefix_len = 6;
  options.sampling = ProbeSampling::kRandom;
  options.seed = 42;
  StatusOr<ProbeSet> a = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_TRUE(a.ok()) << a.status().ToString();

  // Second code path: sort every long-enough document by its key, take the first 12.
  std::vector<int> lines;
  for (int line = 1; line <= kDocuments; ++line) {
    if (!IsShortDocument(line)) lines.push_back(line);
  }
  std::sort(lines.begin(), lines.end(),
            [](int x, int y) { return ProbeSampleKey(42, x) < ProbeSampleKey(42, y); });
  std::vector<std::string> want;
  for (int i = 0; i < 12; ++i) want.push_back("c4.jsonl:" + std::to_string(lines[i]));
  EXPECT_EQ(Ids(*a), want);
  EXPECT_EQ(std::set<std::string>(want.begin(), want.end()).size(), 12u);  // no document twice
  // Each probe is its own document's prefix.
  const std::string line = std::to_string(lines[0]);
  std::vector<int32_t> tokens =
      tokenizer_->Encode(line + " the cat sat on the mat and the dog sat on the log", /*add_bos=*/true);
  tokens.resize(6);
  EXPECT_EQ(a->probes[0].tokens, tokens);
  // Not corpus order: the sample is not the first mode's probes.
  options.sampling = ProbeSampling::kFirst;
  EXPECT_NE(Ids(*MakeProbes(corpus, *tokenizer_, options)), want);
}

TEST_F(ProbesTest, RandomSamplingIsTheSameForTheSameSeedAndDiffersForAnother) {
  const std::string corpus = Write("c4.jsonl", SampleCorpus());
  MakeProbesOptions options;
  options.count = 10;
  options.prefix_len = 6;
  options.sampling = ProbeSampling::kRandom;
  options.seed = 7;
  StatusOr<ProbeSet> a = MakeProbes(corpus, *tokenizer_, options);
  StatusOr<ProbeSet> b = MakeProbes(corpus, *tokenizer_, options);
  options.seed = 8;
  StatusOr<ProbeSet> c = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->Fingerprint(), b->Fingerprint());
  EXPECT_EQ(Ids(*a), Ids(*b));
  EXPECT_NE(Ids(*a), Ids(*c));
  // A smaller count with the same seed gives the first probes of the larger one.
  options.seed = 7;
  options.count = 4;
  StatusOr<ProbeSet> few = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_TRUE(few.ok());
  const std::vector<std::string> ids = Ids(*a);
  EXPECT_EQ(Ids(*few), std::vector<std::string>(ids.begin(), ids.begin() + 4));
}

TEST_F(ProbesTest, RandomSamplingCanTakeEveryDocumentOnceButNotMore) {
  const std::string corpus = Write("c4.jsonl", SampleCorpus());
  int eligible = 0;
  for (int line = 1; line <= kDocuments; ++line) eligible += !IsShortDocument(line);
  MakeProbesOptions options;
  options.count = eligible;
  options.prefix_len = 6;
  options.sampling = ProbeSampling::kRandom;
  options.seed = 3;
  StatusOr<ProbeSet> all = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  std::vector<std::string> ids = Ids(*all);
  EXPECT_EQ(std::set<std::string>(ids.begin(), ids.end()).size(), static_cast<size_t>(eligible));

  options.count = eligible + 1;
  StatusOr<ProbeSet> too_many = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(too_many.status().message().find("only " + std::to_string(eligible) + " probes"), std::string::npos)
      << too_many.status().message();
}

TEST_F(ProbesTest, RandomSamplingOfTextSamplesTheCandidatesOfCorpusOrder) {
  std::string text;
  for (int i = 0; i < 30; ++i) text += "the cat sat on the mat\nand the dog sat\n\n";
  const std::string corpus = Write("text.txt", text);
  MakeProbesOptions options;
  options.prefix_len = 8;
  // Every corpus-order candidate: the largest count that still succeeds.
  options.count = 1;
  std::vector<std::string> candidates;
  for (;; ++options.count) {
    StatusOr<ProbeSet> first = MakeProbes(corpus, *tokenizer_, options);
    if (!first.ok()) break;
    candidates = Ids(*first);
  }
  ASSERT_GE(candidates.size(), 10u);
  options.count = 6;
  options.sampling = ProbeSampling::kRandom;
  options.seed = 11;
  StatusOr<ProbeSet> sample = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_TRUE(sample.ok()) << sample.status().ToString();
  std::set<std::string> all(candidates.begin(), candidates.end());
  std::set<std::string> picked;
  for (const std::string& id : Ids(*sample)) {
    EXPECT_TRUE(all.count(id)) << id << " is not a corpus-order candidate";
    picked.insert(id);
  }
  EXPECT_EQ(picked.size(), 6u);
}

TEST_F(ProbesTest, RandomSamplingReadsTheWholeCorpusSoALateBadLineIsAnError) {
  const std::string corpus = Write("c4.jsonl", SampleCorpus() + "not json\n");
  MakeProbesOptions options;
  options.count = 3;
  options.prefix_len = 6;
  EXPECT_TRUE(MakeProbes(corpus, *tokenizer_, options).ok());  // first: stops after 3 documents
  options.sampling = ProbeSampling::kRandom;
  StatusOr<ProbeSet> set = MakeProbes(corpus, *tokenizer_, options);
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("c4.jsonl:" + std::to_string(kDocuments + 1)), std::string::npos)
      << set.status().message();
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
