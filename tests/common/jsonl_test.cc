#include "common/jsonl.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "tests/worker/engine/test_files.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;

using testing::ReadBytes;
using testing::WriteBytes;

class JsonlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("dtm_jsonl_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes `text` gzipped to `name` and returns the compressed bytes; skips the test without zlib.
  std::string GzipBytes(const std::string& name, const std::string& text) {
    Status s = WriteTextFile(Path(name), text);
    if (s.code() == StatusCode::kUnimplemented) return "";
    EXPECT_TRUE(s.ok()) << s.ToString();
    return ReadBytes(Path(name));
  }

  bool HaveZlib() { return WriteTextFile(Path("probe.gz"), "x").code() != StatusCode::kUnimplemented; }

  static void ExpectErrorNaming(const Status& status, StatusCode code, const std::string& name) {
    EXPECT_EQ(status.code(), code) << status.ToString();
    EXPECT_NE(status.message().find(name), std::string::npos) << status.message();
    EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
  }

  fs::path dir_;
};

std::vector<nlohmann::json> SampleRows() {
  return {{{"id", "a"}, {"tokens", {1, 2, 3}}},
          {{"id", "b"}, {"text", "line\nbreak and \"quotes\" and ünïcode"}},
          {{"id", "c"}, {"tokens", nlohmann::json::array()}, {"prefix_len", 0}}};
}

TEST_F(JsonlTest, RoundTripsRowsThroughAPlainFile) {
  ASSERT_TRUE(WriteJsonLines(Path("rows.jsonl"), SampleRows()).ok());
  StatusOr<std::vector<nlohmann::json>> rows = ReadJsonLines(Path("rows.jsonl"));
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(*rows, SampleRows());
  // One compact value per line.
  std::string text = ReadBytes(Path("rows.jsonl"));
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 3);
  EXPECT_EQ(text.substr(0, text.find('\n')), R"({"id":"a","tokens":[1,2,3]})");
}

TEST_F(JsonlTest, RoundTripsRowsThroughAGzipFile) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  ASSERT_TRUE(WriteJsonLines(Path("rows.jsonl.gz"), SampleRows()).ok());
  std::string raw = ReadBytes(Path("rows.jsonl.gz"));
  ASSERT_GE(raw.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(raw[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>(raw[1]), 0x8b);
  StatusOr<std::vector<nlohmann::json>> rows = ReadJsonLines(Path("rows.jsonl.gz"));
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(*rows, SampleRows());
}

TEST_F(JsonlTest, RefusesGzipWithAClearErrorWhenBuiltWithoutZlib) {
  if (HaveZlib()) GTEST_SKIP() << "built with zlib";
  ExpectErrorNaming(WriteTextFile(Path("x.gz"), "abc"), StatusCode::kUnimplemented, "x.gz");
  ExpectErrorNaming(ReadTextFile(Path("x.gz")).status(), StatusCode::kUnimplemented, "x.gz");
}

TEST_F(JsonlTest, SkipsBlankLinesAndCountsThemInLineNumbers) {
  WriteBytes(Path("blank.jsonl"), "{\"a\":1}\n\n   \n{\"a\":2}\r\n\nnot json\n");
  StatusOr<std::vector<nlohmann::json>> rows = ReadJsonLines(Path("blank.jsonl"));
  ASSERT_FALSE(rows.ok());
  ExpectErrorNaming(rows.status(), StatusCode::kDataLoss, "blank.jsonl:6:");

  WriteBytes(Path("good.jsonl"), "{\"a\":1}\n\n   \n{\"a\":2}\r\n\n");
  rows = ReadJsonLines(Path("good.jsonl"));
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[1]["a"], 2);
}

TEST_F(JsonlTest, ReportsInvalidUtf8AsInvalidJson) {
  WriteBytes(Path("utf8.jsonl"), "{\"a\":\"\xff\xfe\"}\n");
  ExpectErrorNaming(ReadJsonLines(Path("utf8.jsonl")).status(), StatusCode::kDataLoss, "utf8.jsonl:1:");
}

TEST_F(JsonlTest, ReadsLinesOfAnyLengthAndALastLineWithoutNewline) {
  std::string long_line(3 << 20, 'x');
  long_line[12345] = 'y';
  WriteBytes(Path("long.txt"), "short\r\n" + long_line + "\n\nlast");
  StatusOr<std::unique_ptr<LineReader>> reader = LineReader::Open(Path("long.txt"));
  ASSERT_TRUE(reader.ok()) << reader.status().ToString();
  std::string line;
  ASSERT_TRUE((*reader)->Next(&line));
  EXPECT_EQ(line, "short");
  ASSERT_TRUE((*reader)->Next(&line));
  EXPECT_EQ(line, long_line);
  EXPECT_EQ((*reader)->line_number(), 2);
  ASSERT_TRUE((*reader)->Next(&line));
  EXPECT_EQ(line, "");
  ASSERT_TRUE((*reader)->Next(&line));
  EXPECT_EQ(line, "last");
  EXPECT_EQ((*reader)->line_number(), 4);
  EXPECT_FALSE((*reader)->Next(&line));
  EXPECT_TRUE((*reader)->status().ok());
  EXPECT_FALSE((*reader)->Next(&line));
}

TEST_F(JsonlTest, ReadsLongLinesFromGzipFiles) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  std::mt19937 rng(3);
  std::string text;
  for (int i = 0; i < 20; ++i) {
    std::string line(rng() % 200000, 'a');
    for (char& c : line) c = static_cast<char>('a' + rng() % 26);
    text += line + "\n";
  }
  ASSERT_TRUE(WriteTextFile(Path("big.txt.gz"), text).ok());
  StatusOr<std::string> back = ReadTextFile(Path("big.txt.gz"));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, text);
}

TEST_F(JsonlTest, ReadsConcatenatedGzipMembers) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  std::string first = GzipBytes("a.gz", "{\"n\":1}\n");
  std::string second = GzipBytes("b.gz", "{\"n\":2}\n");
  WriteBytes(Path("both.jsonl.gz"), first + second);
  StatusOr<std::vector<nlohmann::json>> rows = ReadJsonLines(Path("both.jsonl.gz"));
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[1]["n"], 2);
}

TEST_F(JsonlTest, RejectsTruncatedGzipAtEveryCut) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  std::string text;
  for (int i = 0; i < 200; ++i) text += "{\"id\":\"" + std::to_string(i) + "\",\"tokens\":[1,2,3]}\n";
  std::string gz = GzipBytes("full.jsonl.gz", text);
  ASSERT_GT(gz.size(), 30u);
  for (size_t cut = 0; cut < gz.size(); cut += (cut < 40 ? 1 : 17)) {
    WriteBytes(Path("cut.jsonl.gz"), gz.substr(0, cut));
    StatusOr<std::vector<nlohmann::json>> rows = ReadJsonLines(Path("cut.jsonl.gz"));
    ASSERT_FALSE(rows.ok()) << "cut at " << cut;
    ExpectErrorNaming(rows.status(), StatusCode::kDataLoss, "cut.jsonl.gz");
    ExpectErrorNaming(ReadTextFile(Path("cut.jsonl.gz")).status(), StatusCode::kDataLoss, "cut.jsonl.gz");
  }
}

TEST_F(JsonlTest, RejectsCorruptGzip) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  std::string text;
  for (int i = 0; i < 100; ++i) text += "{\"i\":" + std::to_string(i) + "}\n";
  std::string gz = GzipBytes("full.jsonl.gz", text);
  std::mt19937 rng(11);
  for (int trial = 0; trial < 100; ++trial) {
    std::string bad = gz;
    // Past the 10-byte header, so that the deflate data or the CRC/length trailer is hit.
    size_t pos = 10 + rng() % (bad.size() - 10);
    bad[pos] = static_cast<char>(bad[pos] ^ (1 + rng() % 255));
    WriteBytes(Path("bad.jsonl.gz"), bad);
    StatusOr<std::string> read = ReadTextFile(Path("bad.jsonl.gz"));
    // A flip can only go unnoticed if it leaves the text intact (e.g. in the header's OS byte).
    if (read.ok()) {
      EXPECT_EQ(*read, text) << "flip at " << pos;
      continue;
    }
    ExpectErrorNaming(read.status(), StatusCode::kDataLoss, "bad.jsonl.gz");
  }
}

TEST_F(JsonlTest, RejectsAPlainFileNamedGzAndTrailingGarbage) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  WriteBytes(Path("plain.jsonl.gz"), "{\"a\":1}\n");
  ExpectErrorNaming(ReadJsonLines(Path("plain.jsonl.gz")).status(), StatusCode::kDataLoss, "plain.jsonl.gz");
  WriteBytes(Path("empty.gz"), "");
  ExpectErrorNaming(ReadTextFile(Path("empty.gz")).status(), StatusCode::kDataLoss, "empty.gz");
  std::string gz = GzipBytes("ok.gz", "hello\n");
  WriteBytes(Path("garbage.gz"), gz + "garbage");
  ExpectErrorNaming(ReadTextFile(Path("garbage.gz")).status(), StatusCode::kDataLoss, "garbage.gz");
}

TEST_F(JsonlTest, ReportsAMissingFileAsNotFound) {
  ExpectErrorNaming(ReadJsonLines(Path("missing.jsonl")).status(), StatusCode::kNotFound, "missing.jsonl");
  ExpectErrorNaming(ReadTextFile(Path("missing.txt")).status(), StatusCode::kNotFound, "missing.txt");
  ExpectErrorNaming(LineReader::Open(Path("missing.txt")).status(), StatusCode::kNotFound, "missing.txt");
  ExpectErrorNaming(WriteTextFile(Path("no/such/dir/x.txt"), "x"), StatusCode::kNotFound, "x.txt");
}

TEST_F(JsonlTest, ReportsReadingADirectoryAsAnError) {
  fs::create_directories(dir_ / "sub");
  StatusOr<std::string> read = ReadTextFile(Path("sub"));
  ASSERT_FALSE(read.ok());
  EXPECT_NE(read.status().message().find("sub"), std::string::npos);
}

TEST_F(JsonlTest, ReplacesFilesAtomicallyAndLeavesNoTemporaryFile) {
  ASSERT_TRUE(WriteTextFile(Path("f.txt"), "old").ok());
  ASSERT_TRUE(WriteTextFile(Path("f.txt"), "new").ok());
  EXPECT_EQ(ReadBytes(Path("f.txt")), "new");
  EXPECT_FALSE(fs::exists(Path("f.txt.tmp")));
  {
    StatusOr<std::unique_ptr<FileWriter>> writer = FileWriter::Open(Path("f.txt"));
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->WriteLine("abandoned").ok());
    EXPECT_TRUE(fs::exists(Path("f.txt.tmp")));
  }
  EXPECT_FALSE(fs::exists(Path("f.txt.tmp")));
  EXPECT_EQ(ReadBytes(Path("f.txt")), "new");
}

TEST_F(JsonlTest, RefusesToWriteAfterClose) {
  StatusOr<std::unique_ptr<FileWriter>> writer = FileWriter::Open(Path("w.txt"));
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->WriteLine("x").ok());
  ASSERT_TRUE((*writer)->Close().ok());
  ExpectErrorNaming((*writer)->WriteLine("y"), StatusCode::kFailedPrecondition, "w.txt");
  ExpectErrorNaming((*writer)->Close(), StatusCode::kFailedPrecondition, "w.txt");
  EXPECT_EQ(ReadBytes(Path("w.txt")), "x\n");
}

TEST_F(JsonlTest, ReportsRowsThatCannotBeWrittenAsJson) {
  std::vector<nlohmann::json> rows = {{{"text", std::string("\xff")}}};
  ExpectErrorNaming(WriteJsonLines(Path("bad.jsonl"), rows), StatusCode::kInvalidArgument, "bad.jsonl");
  EXPECT_FALSE(fs::exists(Path("bad.jsonl")));
  EXPECT_FALSE(fs::exists(Path("bad.jsonl.tmp")));
}

}  // namespace
}  // namespace dtm
