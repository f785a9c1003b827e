#include "common/jsonl.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
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

// ---------------------------------------------------------------------------------------------
// ReadLimits: how the coordinator reads files that a job spec names.

ReadLimits MaxBytes(uint64_t max_bytes) {
  ReadLimits limits;
  limits.max_bytes = max_bytes;
  return limits;
}

ReadLimits RegularFilesOnly() {
  ReadLimits limits;
  limits.regular_file_only = true;
  return limits;
}

TEST_F(JsonlTest, MaxBytesRefusesALargerFileAndAdmitsOneOfExactlyTheLimit) {
  std::string text;
  for (int i = 0; i < 100; ++i) text += "{\"i\":" + std::to_string(i) + "}\n";
  WriteBytes(Path("rows.jsonl"), text);
  const uint64_t size = text.size();

  EXPECT_TRUE(ReadTextFile(Path("rows.jsonl"), MaxBytes(size)).ok());
  EXPECT_TRUE(ReadJsonLines(Path("rows.jsonl"), MaxBytes(size)).ok());
  const std::string limit = std::to_string(size - 1);
  for (const Status& status : {ReadTextFile(Path("rows.jsonl"), MaxBytes(size - 1)).status(),
                               ReadJsonLines(Path("rows.jsonl"), MaxBytes(size - 1)).status()}) {
    ExpectErrorNaming(status, StatusCode::kResourceExhausted, "rows.jsonl");
    EXPECT_NE(status.message().find(limit), std::string::npos) << status.message();
  }

  WriteBytes(Path("config.json"), "{\"num_hidden_layers\": 4, \"pad\": \"" + std::string(1000, 'p') + "\"}");
  const uint64_t json_size = fs::file_size(Path("config.json"));
  EXPECT_TRUE(ReadJsonFile(Path("config.json"), MaxBytes(json_size)).ok());
  ExpectErrorNaming(ReadJsonFile(Path("config.json"), MaxBytes(json_size - 1)).status(),
                    StatusCode::kResourceExhausted, "config.json");
}

TEST_F(JsonlTest, MaxBytesCountsGunzippedBytesSoAGzipBombIsRefused) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  constexpr uint64_t kLimit = 1 << 20;
  // 32 MiB of zeros compress to about 32 KiB: the file is far below the limit, its content far above.
  ASSERT_TRUE(WriteTextFile(Path("bomb.jsonl.gz"), std::string(32u << 20, '\0')).ok());
  ASSERT_LT(fs::file_size(Path("bomb.jsonl.gz")), kLimit);
  ExpectErrorNaming(ReadTextFile(Path("bomb.jsonl.gz"), MaxBytes(kLimit)).status(),
                    StatusCode::kResourceExhausted, "bomb.jsonl.gz");
  ExpectErrorNaming(ReadJsonLines(Path("bomb.jsonl.gz"), MaxBytes(kLimit)).status(),
                    StatusCode::kResourceExhausted, "bomb.jsonl.gz");
  ExpectErrorNaming(ReadJsonFile(Path("bomb.jsonl.gz"), MaxBytes(kLimit)).status(),
                    StatusCode::kResourceExhausted, "bomb.jsonl.gz");
  // Lines too: a bomb of newlines is as large.
  ASSERT_TRUE(WriteTextFile(Path("lines.jsonl.gz"), std::string(8u << 20, '\n')).ok());
  ExpectErrorNaming(ReadJsonLines(Path("lines.jsonl.gz"), MaxBytes(kLimit)).status(),
                    StatusCode::kResourceExhausted, "lines.jsonl.gz");
}

TEST_F(JsonlTest, MaxBytesAdmitsAGzipFileWhoseContentFits) {
  if (!HaveZlib()) GTEST_SKIP() << "built without zlib";
  const std::string text = "{\"id\":\"a\",\"tokens\":[1,2,3]}\n";
  ASSERT_TRUE(WriteTextFile(Path("ok.jsonl.gz"), text).ok());
  StatusOr<std::vector<nlohmann::json>> rows = ReadJsonLines(Path("ok.jsonl.gz"), MaxBytes(text.size()));
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(rows->size(), 1u);
  ExpectErrorNaming(ReadTextFile(Path("ok.jsonl.gz"), MaxBytes(text.size() - 1)).status(),
                    StatusCode::kResourceExhausted, "ok.jsonl.gz");
}

TEST_F(JsonlTest, RegularFileOnlyRefusesAFifoWithoutBlocking) {
  // Nobody ever opens the FIFO for writing: a reader that opened it for reading would wait forever.
  ASSERT_EQ(::mkfifo(Path("fifo.jsonl").c_str(), 0600), 0) << "mkfifo " << Path("fifo.jsonl");
  ExpectErrorNaming(ReadTextFile(Path("fifo.jsonl"), RegularFilesOnly()).status(),
                    StatusCode::kFailedPrecondition, "fifo.jsonl");
  ExpectErrorNaming(ReadJsonLines(Path("fifo.jsonl"), RegularFilesOnly()).status(),
                    StatusCode::kFailedPrecondition, "fifo.jsonl");
  ExpectErrorNaming(ReadJsonFile(Path("fifo.jsonl"), RegularFilesOnly()).status(),
                    StatusCode::kFailedPrecondition, "fifo.jsonl");
  ExpectErrorNaming(LineReader::Open(Path("fifo.jsonl"), RegularFilesOnly()).status(),
                    StatusCode::kFailedPrecondition, "fifo.jsonl");
}

TEST_F(JsonlTest, RegularFileOnlyRefusesDevZeroAndAFolder) {
  if (!fs::exists("/dev/zero")) GTEST_SKIP() << "no /dev/zero";
  ExpectErrorNaming(ReadTextFile("/dev/zero", RegularFilesOnly()).status(), StatusCode::kFailedPrecondition,
                    "/dev/zero");
  ExpectErrorNaming(ReadJsonLines("/dev/zero", RegularFilesOnly()).status(), StatusCode::kFailedPrecondition,
                    "/dev/zero");
  fs::create_directories(dir_ / "folder");
  ExpectErrorNaming(ReadTextFile(Path("folder"), RegularFilesOnly()).status(),
                    StatusCode::kFailedPrecondition, "folder");
}

TEST_F(JsonlTest, RegularFileOnlyAdmitsARegularFileAndASymlinkToOne) {
  WriteBytes(Path("rows.jsonl"), "{\"a\":1}\n");
  fs::create_symlink(Path("rows.jsonl"), Path("link.jsonl"));
  StatusOr<std::vector<nlohmann::json>> rows = ReadJsonLines(Path("rows.jsonl"), RegularFilesOnly());
  ASSERT_TRUE(rows.ok()) << rows.status().ToString();
  EXPECT_EQ(rows->size(), 1u);
  EXPECT_EQ(ReadTextFile(Path("link.jsonl"), RegularFilesOnly()).value(), "{\"a\":1}\n");
  // A missing file is still NOT_FOUND, not a file of the wrong kind.
  ExpectErrorNaming(ReadTextFile(Path("missing.jsonl"), RegularFilesOnly()).status(), StatusCode::kNotFound,
                    "missing.jsonl");
}

TEST_F(JsonlTest, QuoteContentFalseKeepsFileBytesOutOfErrors) {
  ReadLimits quiet;
  quiet.quote_content = false;
  // Lines that a JSON parser would quote back ("last read: ..."): a bare word, an unterminated
  // string, a value inside an object.
  const std::vector<std::string> lines = {"SECRET-VALUE-123", "\"SECRET-VALUE-123",
                                          "{\"key\": SECRET-VALUE-123}", "[\"SECRET-VALUE-123\""};
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE(lines[i]);
    WriteBytes(Path("secret.jsonl"), "{\"ok\":1}\n" + lines[i] + "\n");
    Status lines_error = ReadJsonLines(Path("secret.jsonl"), quiet).status();
    ExpectErrorNaming(lines_error, StatusCode::kDataLoss, "secret.jsonl:2");
    EXPECT_EQ(lines_error.message().find("SECRET"), std::string::npos) << lines_error.message();

    WriteBytes(Path("secret.json"), lines[i]);
    Status file_error = ReadJsonFile(Path("secret.json"), quiet).status();
    ExpectErrorNaming(file_error, StatusCode::kDataLoss, "secret.json");
    EXPECT_EQ(file_error.message().find("SECRET"), std::string::npos) << file_error.message();
  }
}

TEST_F(JsonlTest, QuoteContentTrueMayQuoteTheParsersDetail) {
  // The default, for the user's own files: today the parser's detail names what it read, which is
  // what QuoteContentFalseKeepsFileBytesOutOfErrors shows is left out.
  WriteBytes(Path("secret.jsonl"), "\"SECRET-VALUE-123\n");
  Status error = ReadJsonLines(Path("secret.jsonl")).status();
  ExpectErrorNaming(error, StatusCode::kDataLoss, "secret.jsonl:1");
  EXPECT_NE(error.message().find("SECRET-VALUE-123"), std::string::npos) << error.message();
}

}  // namespace
}  // namespace dtm
