#include "worker/engine/training_data.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "common/jsonl.h"
#include "common/sha256.h"
#include "tests/worker/engine/test_models.h"
#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

using Rows = std::vector<std::vector<int32_t>>;

const std::vector<std::string> kDocs = {
    "the cat sat on the mat",
    "a quick brown fox jumps over the lazy dog",
    "the dog sat on the log again and again",
    "caf\xC3\xA9 na\xC3\xAFve \xC3\xBC" "ber the fox",  // characters outside the vocabulary: byte pieces
    "and the lazy cat sat",
};

class TrainingDataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tokenizer = testing::TinyTestTokenizer(dir_);
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status().ToString();
    tokenizer_ = std::move(*tokenizer);
  }

  std::string WriteJsonl(const std::string& name, const std::vector<std::string>& texts) {
    std::vector<nlohmann::json> rows;
    for (const std::string& t : texts) rows.push_back({{"url", "https://example.com"}, {"text", t}});
    EXPECT_TRUE(WriteJsonLines(dir_.File(name), rows).ok());
    return dir_.File(name);
  }
  std::string WriteText(const std::string& name, const std::string& text) {
    EXPECT_TRUE(WriteTextFile(dir_.File(name), text).ok());
    return dir_.File(name);
  }
  bool HaveZlib() { return WriteTextFile(dir_.File("probe.gz"), "x").code() != StatusCode::kUnimplemented; }

  StatusOr<TrainingData> Load(const std::string& path, int64_t seq_len, int64_t max_sequences = 0,
                              uint64_t seed = 0, const std::string& format = "auto") {
    TrainingDataOptions options;
    options.path = path;
    options.format = format;
    options.seq_len = seq_len;
    options.max_sequences = max_sequences;
    options.seed = seed;
    return LoadTrainingData(options, *tokenizer_, kMaxPositions);
  }

  // The packed stream computed here, independently of the module: BOS doc EOS, one after another.
  std::vector<int32_t> Stream(const std::vector<std::string>& docs) const {
    std::vector<int32_t> stream;
    for (const std::string& d : docs) {
      stream.push_back(1);  // <s> of the BPE trainer's Llama layout
      const std::vector<int32_t> ids = tokenizer_->Encode(d, false);
      stream.insert(stream.end(), ids.begin(), ids.end());
      stream.push_back(2);  // </s>
    }
    return stream;
  }
  static Rows Cut(const std::vector<int32_t>& stream, int64_t row) {
    Rows rows;
    for (size_t start = 0; start + row <= stream.size(); start += row) {
      rows.emplace_back(stream.begin() + start, stream.begin() + start + row);
    }
    return rows;
  }
  template <typename T>
  static Rows RowsOf(const torch::Tensor& t) {
    Rows rows(t.size(0));
    for (int64_t i = 0; i < t.size(0); ++i) {
      for (int64_t j = 0; j < t.size(1); ++j) rows[i].push_back(static_cast<int32_t>(t[i][j].item<T>()));
    }
    return rows;
  }
  static void ExpectError(const Status& status, StatusCode code, const std::vector<std::string>& parts) {
    EXPECT_EQ(status.code(), code) << status.ToString();
    for (const std::string& p : parts) EXPECT_NE(status.message().find(p), std::string::npos) << status.message();
  }

  static constexpr int64_t kMaxPositions = 128;
  testing::TempDir dir_;
  std::unique_ptr<Tokenizer> tokenizer_;
};

// Twelve short documents: enough for the batch order tests' 20 and more sequences at seq_len 3.
std::vector<std::string> ManyDocs() {
  std::vector<std::string> docs;
  for (int i = 0; i < 12; ++i) docs.push_back(kDocs[i % kDocs.size()]);
  return docs;
}

TEST_F(TrainingDataTest, JsonLinesArePackedAsBosDocEosCutIntoSequencesWithTheTailDropped) {
  ASSERT_EQ(tokenizer_->bos_id(), 1);
  ASSERT_EQ(tokenizer_->eos_id(), 2);
  const std::vector<int32_t> stream = Stream(kDocs);
  const int64_t seq_len = 7;
  ASSERT_NE(stream.size() % (seq_len + 1), 0u) << "the test wants a tail to drop";
  StatusOr<TrainingData> data = Load(WriteJsonl("c4.jsonl", kDocs), seq_len, 0, 42);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(data->sequences.scalar_type(), torch::kInt32);
  EXPECT_EQ(data->sequences.size(1), seq_len + 1);
  EXPECT_EQ(RowsOf<int32_t>(data->sequences), Cut(stream, seq_len + 1));
  EXPECT_EQ(data->seq_len, seq_len);
  EXPECT_EQ(data->documents, static_cast<int64_t>(kDocs.size()));
  EXPECT_EQ(data->tokens, static_cast<int64_t>(stream.size()));
  EXPECT_EQ(data->seed, 42u);
}

TEST_F(TrainingDataTest, GzippedJsonLinesGiveTheSameSequences) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  StatusOr<TrainingData> plain = Load(WriteJsonl("c4.jsonl", kDocs), 5);
  StatusOr<TrainingData> gz = Load(WriteJsonl("c4.json.gz", kDocs), 5);
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  ASSERT_TRUE(gz.ok()) << gz.status().ToString();
  EXPECT_TRUE(torch::equal(plain->sequences, gz->sequences));
  EXPECT_EQ(gz->documents, plain->documents);
  EXPECT_EQ(gz->fingerprint, plain->fingerprint);
}

TEST_F(TrainingDataTest, RawTextParagraphsSeparatedByBlankLinesAreDocuments) {
  const std::string text = "the cat sat\r\non the mat\n\n \t\nthe lazy dog\n\n\nagain and again";
  const std::vector<std::string> docs = {"the cat sat\non the mat", "the lazy dog", "again and again"};
  const std::vector<int32_t> stream = Stream(docs);
  for (const std::string name : {"corpus.txt", "corpus.raw.gz"}) {
    if (name == "corpus.raw.gz" && !HaveZlib()) continue;
    StatusOr<TrainingData> data = Load(WriteText(name, text), 3);
    ASSERT_TRUE(data.ok()) << data.status().ToString();
    EXPECT_EQ(RowsOf<int32_t>(data->sequences), Cut(stream, 4)) << name;
    EXPECT_EQ(data->documents, 3) << name;
    EXPECT_EQ(data->tokens, static_cast<int64_t>(stream.size())) << name;
  }
}

TEST_F(TrainingDataTest, AnExplicitFormatOverridesTheFileName) {
  const std::string jsonl_text = "{\"text\": \"the cat sat on the mat\"}\n";
  StatusOr<TrainingData> as_text = Load(WriteText("rows.jsonl", jsonl_text), 3, 0, 0, "text");
  ASSERT_TRUE(as_text.ok()) << as_text.status().ToString();
  EXPECT_EQ(RowsOf<int32_t>(as_text->sequences), Cut(Stream({"{\"text\": \"the cat sat on the mat\"}"}), 4));
  StatusOr<TrainingData> as_jsonl = Load(WriteText("rows.dat", jsonl_text), 3, 0, 0, "jsonl");
  ASSERT_TRUE(as_jsonl.ok()) << as_jsonl.status().ToString();
  EXPECT_EQ(RowsOf<int32_t>(as_jsonl->sequences), Cut(Stream({"the cat sat on the mat"}), 4));
}

TEST_F(TrainingDataTest, WhitespaceDocumentsAndBlankLinesAreSkippedAndNotCounted) {
  const std::string path = WriteText("c4.jsonl", "{\"text\": \"the cat sat\"}\n\n{\"text\": \" \\n\\t \"}\n"
                                                 "{\"text\": \"\"}\n  \n{\"text\": \"the lazy dog\"}\n");
  StatusOr<TrainingData> data = Load(path, 2);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const std::vector<int32_t> stream = Stream({"the cat sat", "the lazy dog"});
  EXPECT_EQ(RowsOf<int32_t>(data->sequences), Cut(stream, 3));
  EXPECT_EQ(data->documents, 2);
  EXPECT_EQ(data->tokens, static_cast<int64_t>(stream.size()));
}

TEST_F(TrainingDataTest, MaxSequencesStopsReadingAfterTheDocumentThatCompletesThem) {
  const int64_t row = 4;
  const std::vector<std::string> docs = ManyDocs();
  const Rows all = Cut(Stream(docs), row);
  ASSERT_GE(all.size(), 4u);
  // The fewest leading documents whose stream holds two sequences.
  size_t read = 0;
  while (Stream({docs.begin(), docs.begin() + read}).size() < 2 * row) ++read;
  ASSERT_LT(read, docs.size());
  StatusOr<TrainingData> data = Load(WriteJsonl("c4.jsonl", docs), row - 1, 2);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_EQ(RowsOf<int32_t>(data->sequences), Rows(all.begin(), all.begin() + 2));
  EXPECT_EQ(data->documents, static_cast<int64_t>(read));
  EXPECT_EQ(data->tokens, static_cast<int64_t>(Stream({docs.begin(), docs.begin() + read}).size()));
}

TEST_F(TrainingDataTest, TheFingerprintHashesSeqLenAndEveryPackedToken) {
  StatusOr<TrainingData> data = Load(WriteJsonl("a.jsonl", kDocs), 7);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  std::string bytes;
  auto put_le = [&bytes](uint64_t v, int n) {
    for (int i = 0; i < n; ++i) bytes.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  };
  put_le(7, 8);
  for (const auto& r : Cut(Stream(kDocs), 8)) {
    for (int32_t id : r) put_le(static_cast<uint32_t>(id), 4);
  }
  EXPECT_EQ(data->fingerprint, Sha256Hex(bytes));

  StatusOr<TrainingData> again = Load(dir_.File("a.jsonl"), 7, 0, 99);
  StatusOr<TrainingData> longer = Load(dir_.File("a.jsonl"), 8);
  std::vector<std::string> edited = kDocs;
  edited[0] = "a cat sat on the mat";
  const std::vector<int32_t> a = Stream(kDocs), b = Stream(edited);
  ASSERT_EQ(a.size(), b.size());
  int differing = 0;
  for (size_t i = 0; i < a.size(); ++i) differing += a[i] != b[i];
  ASSERT_EQ(differing, 1) << "\"the\" and \"a\" should be one piece each";
  StatusOr<TrainingData> other = Load(WriteJsonl("b.jsonl", edited), 7);
  ASSERT_TRUE(again.ok() && longer.ok() && other.ok());
  EXPECT_EQ(again->fingerprint, data->fingerprint) << "the seed orders, it does not change the data";
  EXPECT_NE(longer->fingerprint, data->fingerprint);
  EXPECT_NE(other->fingerprint, data->fingerprint);
  EXPECT_FALSE(torch::equal(other->sequences, data->sequences));
}

TEST_F(TrainingDataTest, EachEpochIsAPermutationOfEverySequence) {
  StatusOr<TrainingData> data = Load(WriteJsonl("c4.jsonl", ManyDocs()), 3, 0, 5);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const int64_t n = data->sequences.size(0);
  ASSERT_GE(n, 20);
  std::vector<int64_t> iota(n);
  std::iota(iota.begin(), iota.end(), 0);
  std::set<std::vector<int64_t>> orders;
  for (int64_t epoch = 0; epoch < 4; ++epoch) {
    std::vector<int64_t> order = BatchIndices(*data, epoch, n);  // batch_size N: step e is epoch e
    orders.insert(order);
    std::sort(order.begin(), order.end());
    EXPECT_EQ(order, iota) << "epoch " << epoch;
  }
  EXPECT_EQ(orders.size(), 4u) << "each epoch has its own order";
  EXPECT_NE(*orders.begin(), iota);
}

TEST_F(TrainingDataTest, TheSameSeedAndStepGiveTheSameBatchAndAnotherSeedAnotherOrder) {
  StatusOr<TrainingData> data = Load(WriteJsonl("c4.jsonl", ManyDocs()), 3, 0, 5);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const int64_t n = data->sequences.size(0);
  for (int64_t step : {0, 3, 17}) EXPECT_EQ(BatchIndices(*data, step, 4), BatchIndices(*data, step, 4));
  TrainingData reseeded = *data;
  reseeded.seed = 6;
  EXPECT_NE(BatchIndices(reseeded, 0, n), BatchIndices(*data, 0, n));
  // A seed above 32 bits counts in full.
  reseeded.seed = 5 + (uint64_t{1} << 32);
  EXPECT_NE(BatchIndices(reseeded, 0, n), BatchIndices(*data, 0, n));
}

TEST_F(TrainingDataTest, ABatchCrossingAnEpochEndTakesTheRestFromTheNextEpoch) {
  StatusOr<TrainingData> data = Load(WriteJsonl("c4.jsonl", ManyDocs()), 3, 0, 1);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const int64_t n = data->sequences.size(0);
  const int64_t b = 7;
  ASSERT_NE(n % b, 0) << "the test wants a batch across the epoch end";
  const int64_t step = n / b;  // positions step*b .. step*b + 6 straddle position n
  const std::vector<int64_t> epoch0 = BatchIndices(*data, 0, n);
  const std::vector<int64_t> epoch1 = BatchIndices(*data, 1, n);
  std::vector<int64_t> expected;
  for (int64_t p = step * b; p < (step + 1) * b; ++p) expected.push_back(p < n ? epoch0[p] : epoch1[p - n]);
  EXPECT_EQ(BatchIndices(*data, step, b), expected);
  // Each position is the same sequence whatever the batch size that reaches it.
  for (int64_t i = 0; i < b; ++i) EXPECT_EQ(BatchIndices(*data, step * b + i, 1)[0], expected[i]);
}

TEST_F(TrainingDataTest, BatchSliceHoldsTheRowsOfBatchIndicesAsInt64) {
  StatusOr<TrainingData> data = Load(WriteJsonl("c4.jsonl", ManyDocs()), 3, 0, 9);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  const std::vector<int64_t> indices = BatchIndices(*data, 2, 6);
  const Rows all = RowsOf<int32_t>(data->sequences);
  Rows joined;
  for (auto [begin, end] : {std::pair<int64_t, int64_t>{0, 2}, {2, 5}, {5, 6}}) {
    const torch::Tensor slice = BatchSlice(*data, 2, 6, begin, end);
    EXPECT_EQ(slice.scalar_type(), torch::kInt64);
    ASSERT_EQ(slice.size(0), end - begin);
    EXPECT_EQ(slice.size(1), 4);
    for (const auto& r : RowsOf<int64_t>(slice)) joined.push_back(r);
  }
  Rows expected;
  for (int64_t i : indices) expected.push_back(all[i]);
  EXPECT_EQ(joined, expected);
  EXPECT_EQ(BatchSlice(*data, 2, 6, 3, 3).sizes(), (std::vector<int64_t>{0, 4}));
}

TEST_F(TrainingDataTest, RefusesTextThatYieldsNoFullSequenceSayingHowManyTokensItYielded) {
  StatusOr<TrainingData> empty = Load(WriteText("empty.jsonl", ""), 4);
  ASSERT_FALSE(empty.ok());
  ExpectError(empty.status(), StatusCode::kInvalidArgument, {dir_.File("empty.jsonl"), "0 tokens", "5 tokens"});

  StatusOr<TrainingData> blank = Load(WriteText("blank.jsonl", "{\"text\": \"  \"}\n{\"text\": \"\\n\"}\n"), 4);
  ASSERT_FALSE(blank.ok());
  ExpectError(blank.status(), StatusCode::kInvalidArgument, {"blank.jsonl", "0 tokens", "0 documents"});

  const auto n = static_cast<int64_t>(Stream({"the cat"}).size());
  StatusOr<TrainingData> short_text = Load(WriteText("short.txt", "the cat\n"), 100);
  ASSERT_FALSE(short_text.ok());
  ExpectError(short_text.status(), StatusCode::kInvalidArgument,
              {"short.txt", std::to_string(n) + " tokens", "101 tokens"});
}

TEST_F(TrainingDataTest, RefusesSeqLensOutsideOneAndThePositionsOfTheModel) {
  const std::string path = WriteJsonl("c4.jsonl", ManyDocs());
  ExpectError(Load(path, 0).status(), StatusCode::kInvalidArgument, {path, "seq_len 0"});
  ExpectError(Load(path, kMaxPositions + 1).status(), StatusCode::kInvalidArgument,
              {path, "max_position_embeddings 128"});
  EXPECT_TRUE(Load(path, kMaxPositions).ok()) << "inputs of 128 tokens fill the 128 positions";
  ExpectError(Load(path, 4, -1).status(), StatusCode::kInvalidArgument, {path, "max_sequences"});
  ExpectError(Load(path, 4, 0, 0, "csv").status(), StatusCode::kInvalidArgument, {path, "csv"});
}

TEST_F(TrainingDataTest, RefusesJsonLinesWithoutAStringTextNamingTheLine) {
  const std::string ok_row = "{\"text\": \"the cat sat on the mat\"}\n";
  ExpectError(Load(WriteText("a.jsonl", ok_row + "\n{\"content\": \"x\"}\n"), 2).status(),
              StatusCode::kInvalidArgument, {dir_.File("a.jsonl") + ":3", "\"text\""});
  ExpectError(Load(WriteText("b.jsonl", ok_row + "{\"text\": 5}\n"), 2).status(), StatusCode::kInvalidArgument,
              {"b.jsonl:2", "string"});
  ExpectError(Load(WriteText("c.jsonl", "[\"the cat\"]\n"), 2).status(), StatusCode::kInvalidArgument,
              {"c.jsonl:1", "object"});
  ExpectError(Load(WriteText("d.jsonl", ok_row + "{\"text\": \"x\"\n"), 2).status(), StatusCode::kDataLoss,
              {"d.jsonl:2", "invalid JSON"});
  const std::string deep = "{\"text\": \"x\", \"a\": " + std::string(1000, '[') + std::string(1000, ']') + "}\n";
  ExpectError(Load(WriteText("e.jsonl", deep), 2).status(), StatusCode::kInvalidArgument, {"e.jsonl:1", "deeper"});
}

TEST_F(TrainingDataTest, RefusesWhatIsNotARegularFileAndAMissingFile) {
  ExpectError(Load("/dev/zero", 4).status(), StatusCode::kFailedPrecondition, {"/dev/zero"});
  ExpectError(Load(dir_.File("missing.jsonl"), 4).status(), StatusCode::kNotFound, {"missing.jsonl"});
}

TEST_F(TrainingDataTest, BatchIndicesIsEmptyForANegativeStepOrAnEmptyBatch) {
  StatusOr<TrainingData> data = Load(WriteJsonl("c4.jsonl", kDocs), 3);
  ASSERT_TRUE(data.ok()) << data.status().ToString();
  EXPECT_TRUE(BatchIndices(*data, -1, 4).empty());
  EXPECT_TRUE(BatchIndices(*data, 0, 0).empty());
  EXPECT_TRUE(BatchIndices(TrainingData{}, 0, 4).empty());
}

}  // namespace
}  // namespace dtm
