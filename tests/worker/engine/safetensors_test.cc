#include "worker/engine/safetensors.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
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

// The bytes of a safetensors file with this header text and data section.
std::string FileBytes(const std::string& header, const std::string& data) {
  uint64_t n = header.size();
  char length[8];
  std::memcpy(length, &n, 8);
  return std::string(length, 8) + header + data;
}

std::string TensorBytes(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), c.numel() * c.element_size());
}

// Tensors whose every bit pattern is random, NaNs and infinities included.
torch::Tensor RandomBits(std::vector<int64_t> shape, torch::ScalarType dtype, uint64_t seed) {
  torch::Tensor t = torch::empty(shape, torch::TensorOptions().dtype(dtype));
  std::mt19937_64 rng(seed);
  auto* p = static_cast<uint8_t*>(t.data_ptr());
  for (int64_t i = 0; i < t.numel() * static_cast<int64_t>(t.element_size()); ++i) p[i] = static_cast<uint8_t>(rng());
  return t;
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() / ("dtm_safetensors_test_" + std::to_string(::getpid()) + "_" + info->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Writes a hand-made file and expects Open to refuse it with DATA_LOSS and a message naming it
  // and containing `expected`.
  void ExpectCorrupt(const std::string& bytes, const std::string& expected) {
    WriteBytes(Path("bad.safetensors"), bytes);
    StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(Path("bad.safetensors"));
    ASSERT_FALSE(file.ok()) << "accepted: " << bytes.substr(8);
    ExpectError(file.status(), StatusCode::kDataLoss, "bad.safetensors");
    EXPECT_NE(file.status().message().find(expected), std::string::npos) << file.status().message();
  }

  void ExpectCorruptHeader(const std::string& header, const std::string& data, const std::string& expected) {
    SCOPED_TRACE(header);
    ExpectCorrupt(FileBytes(header, data), expected);
  }

  static void ExpectError(const Status& status, StatusCode code, const std::string& name) {
    EXPECT_EQ(status.code(), code) << status.ToString();
    EXPECT_NE(status.message().find(name), std::string::npos) << status.message();
    EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripsEveryDTypeBitExact) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"f32", RandomBits({3, 5}, torch::kFloat32, 1)},
      {"f16", RandomBits({7}, torch::kFloat16, 2)},
      {"bf16", RandomBits({2, 3, 4}, torch::kBFloat16, 3)},
      {"f64", RandomBits({2}, torch::kFloat64, 4)},
      {"i64", torch::arange(-3, 3, torch::kInt64)},
      {"i32", torch::arange(5, torch::kInt32)},
      {"i16", torch::arange(-5, 5, torch::kInt16)},
      {"i8", torch::arange(-100, 100, 7, torch::kInt8)},
      {"u8", torch::arange(250, 256, torch::kInt32).to(torch::kUInt8)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(2.5f)},
      {"empty", torch::empty({0, 4}, torch::kBFloat16)},
  };
  ASSERT_TRUE(WriteSafetensors(Path("all.safetensors"), tensors, {{"format", "pt"}}).ok());
  StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(Path("all.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  ASSERT_EQ((*file)->tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, expected] = tensors[i];
    SCOPED_TRACE(name);
    EXPECT_EQ((*file)->tensors()[i].name, name);  // header order is the given order
    StatusOr<torch::Tensor> loaded = (*file)->Load(name);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    EXPECT_EQ(loaded->scalar_type(), expected.scalar_type());
    EXPECT_EQ(loaded->sizes(), expected.sizes());
    EXPECT_EQ(TensorBytes(*loaded), TensorBytes(expected));
    EXPECT_EQ((*file)->RawBytes(*(*file)->Find(name)), TensorBytes(expected));
  }
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  EXPECT_EQ((*file)->Find("absent"), nullptr);
}

TEST_F(SafetensorsTest, WritesTheReferenceLayout) {
  torch::Tensor a = torch::tensor({1.0f, 2.0f});
  torch::Tensor b = torch::tensor({3.0f}).to(torch::kFloat16);
  ASSERT_TRUE(WriteSafetensors(Path("ref.safetensors"), {{"a", a}, {"b", b}}, {{"format", "pt"}}).ok());
  std::string bytes = ReadBytes(Path("ref.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.size(), 8 + n + 8 + 2);
  std::string header = bytes.substr(8, n);
  const std::string expected =
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
      R"("b":{"dtype":"F16","shape":[1],"data_offsets":[8,10]}})";
  EXPECT_EQ(header.substr(0, expected.size()), expected);
  EXPECT_EQ(header.find_first_not_of(' ', expected.size()), std::string::npos);
  EXPECT_FALSE(fs::exists(Path("ref.safetensors.tmp")));
}

TEST_F(SafetensorsTest, WritesNonContiguousTensorsAsTheirValues) {
  torch::Tensor t = torch::arange(12, torch::kFloat32).reshape({3, 4}).t();
  ASSERT_TRUE(WriteSafetensors(Path("t.safetensors"), {{"t", t}}).ok());
  auto file = SafetensorsFile::Open(Path("t.safetensors"));
  ASSERT_TRUE(file.ok());
  StatusOr<torch::Tensor> loaded = (*file)->Load("t");
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(torch::equal(*loaded, t));
}

TEST_F(SafetensorsTest, LoadsWithConversionIntoFreshTensors) {
  torch::Tensor bf16 = torch::randn({4, 6}).to(torch::kBFloat16);
  torch::Tensor f32 = torch::randn({5});
  ASSERT_TRUE(WriteSafetensors(Path("c.safetensors"), {{"bf16", bf16}, {"f32", f32}}).ok());
  auto file = SafetensorsFile::Open(Path("c.safetensors"));
  ASSERT_TRUE(file.ok());
  StatusOr<torch::Tensor> wide = (*file)->LoadAs("bf16", torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(wide.ok()) << wide.status().ToString();
  EXPECT_EQ(wide->scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(*wide, bf16.to(torch::kFloat32)));
  // Same dtype and device: still a copy, writable without touching the read-only mapping.
  StatusOr<torch::Tensor> same = (*file)->LoadAs("f32", torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(same.ok());
  same->fill_(7.0f);
  StatusOr<torch::Tensor> again = (*file)->Load("f32");
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE(torch::equal(*again, f32));
  ExpectError((*file)->LoadAs("nope", torch::kFloat32, torch::kCPU).status(), StatusCode::kNotFound, "c.safetensors");
  ExpectError((*file)->Load("nope").status(), StatusCode::kNotFound, "c.safetensors");
}

TEST_F(SafetensorsTest, LoadsOntoTheGpuWhenThereIsOne) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  torch::Tensor bf16 = RandomBits({64, 32}, torch::kBFloat16, 9);
  torch::Tensor f32 = torch::randn({17});
  ASSERT_TRUE(WriteSafetensors(Path("gpu.safetensors"), {{"bf16", bf16}, {"f32", f32}}).ok());
  auto file = SafetensorsFile::Open(Path("gpu.safetensors"));
  ASSERT_TRUE(file.ok());
  StatusOr<torch::Tensor> same = (*file)->LoadAs("bf16", torch::kBFloat16, torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(same.ok()) << same.status().ToString();
  EXPECT_TRUE(same->is_cuda());
  EXPECT_EQ(TensorBytes(same->cpu()), TensorBytes(bf16));
  StatusOr<torch::Tensor> narrow = (*file)->LoadAs("f32", torch::kBFloat16, torch::Device(torch::kCUDA, 0));
  ASSERT_TRUE(narrow.ok());
  EXPECT_TRUE(torch::equal(narrow->cpu(), f32.to(torch::kBFloat16)));
  // A GPU tensor is written from its values too.
  ASSERT_TRUE(WriteSafetensors(Path("from_gpu.safetensors"), {{"t", *same}}).ok());
  auto back = SafetensorsFile::Open(Path("from_gpu.safetensors"));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(TensorBytes(*(*back)->Load("t")), TensorBytes(bf16));
}

TEST_F(SafetensorsTest, LoadsUnalignedTensors) {
  // Legal in the format though the reference writer never makes it: a F32 at an odd offset.
  std::string data = "x" + TensorBytes(torch::tensor({1.5f, -2.0f}));
  std::string header = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[1,9]}})";
  WriteBytes(Path("odd.safetensors"), FileBytes(header, data));
  auto file = SafetensorsFile::Open(Path("odd.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  StatusOr<torch::Tensor> t = (*file)->LoadAs("t", torch::kFloat64, torch::kCPU);
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(torch::equal(*t, torch::tensor({1.5, -2.0}, torch::kFloat64)));
}

TEST_F(SafetensorsTest, AcceptsGapsAndZeroSizedTensorsAnywhere) {
  std::string data = TensorBytes(torch::tensor({1.0f})) + "gap!" + TensorBytes(torch::tensor({2.0f}));
  std::string header = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                       R"("e":{"dtype":"F32","shape":[0,3],"data_offsets":[2,2]},)"
                       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})";
  WriteBytes(Path("gap.safetensors"), FileBytes(header, data));
  auto file = SafetensorsFile::Open(Path("gap.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  EXPECT_FLOAT_EQ((*file)->Load("b")->item<float>(), 2.0f);
  EXPECT_EQ((*file)->Load("e")->numel(), 0);
}

TEST_F(SafetensorsTest, ReportsAMissingFileAsNotFound) {
  ExpectError(SafetensorsFile::Open(Path("missing.safetensors")).status(), StatusCode::kNotFound,
              "missing.safetensors");
}

TEST_F(SafetensorsTest, RejectsFilesShorterThanTheLengthPrefix) {
  for (int n : {0, 1, 7}) ExpectCorrupt(std::string(n, '\0'), "too short");
}

TEST_F(SafetensorsTest, RejectsHeaderLongerThanFile) {
  std::string bytes = FileBytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  uint64_t n = bytes.size();  // 8 bytes longer than what follows the prefix
  std::memcpy(bytes.data(), &n, 8);
  ExpectCorrupt(bytes, "exceeds the file size");
}

TEST_F(SafetensorsTest, RejectsAbsurdHeaderLengths) {
  for (uint64_t n : {uint64_t{1} << 40, ~uint64_t{0}, uint64_t{SafetensorsFile::kMaxHeaderBytes + 1}}) {
    std::string bytes = FileBytes("{}", "");
    std::memcpy(bytes.data(), &n, 8);
    ExpectCorrupt(bytes, "beyond the limit");
  }
}

TEST_F(SafetensorsTest, RejectsInvalidJsonHeaders) {
  ExpectCorruptHeader(R"({"a": )", "", "not valid JSON");
  ExpectCorruptHeader("", "", "not valid JSON");
  ExpectCorruptHeader("{\"a\":\"\xff\"}", "", "not valid JSON");
  ExpectCorruptHeader("[1, 2]", "", "not a JSON object");
  ExpectCorruptHeader("17", "", "not a JSON object");
}

TEST_F(SafetensorsTest, RejectsMalformedEntries) {
  ExpectCorruptHeader(R"({"a": [1]})", "", "tensor 'a' entry is not an object");
  ExpectCorruptHeader(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", "abcd", "no dtype");
  ExpectCorruptHeader(R"({"a": {"dtype": 3, "shape": [1], "data_offsets": [0, 4]}})", "abcd", "no dtype");
  ExpectCorruptHeader(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", "abcd", "no shape");
}

TEST_F(SafetensorsTest, RejectsUnknownDTypes) {
  for (const char* dtype : {"Q4", "f32", "F8_E4M3", ""}) {
    ExpectCorruptHeader(std::string(R"({"a":{"dtype":")") + dtype + R"(","shape":[1],"data_offsets":[0,1]}})", "x",
                        "unknown dtype");
  }
}

TEST_F(SafetensorsTest, RejectsShapesThatAreNotListsOfNonNegativeIntegers) {
  for (const char* shape : {"[-1]", "[2.0]", "[\"2\"]", "3", "[[1]]", "[null]", "[9223372036854775808]"}) {
    ExpectCorruptHeader(std::string(R"({"a":{"dtype":"U8","shape":)") + shape + R"(,"data_offsets":[0,2]}})", "xx",
                        "shape");
  }
}

// Found with fuzz/safetensors_fuzzer on a crafted input (libFuzzer's length limit keeps it from nesting
// this deep itself): a shape nested 200,000 levels deep overflowed the stack when the header object
// grew around it and copied it.
TEST_F(SafetensorsTest, RejectsHeadersNestedTooDeeply) {
  const auto nested = [](int levels) { return std::string(levels, '[') + std::string(levels, ']'); };
  ExpectCorruptHeader(R"({"a":{"dtype":"U8","shape":)" + nested(200'000) + R"(,"data_offsets":[0,0]}})", "",
                      "header nests deeper than 64 levels");
  ExpectCorruptHeader(R"({"__metadata__":{"k":)" + nested(63) + "}}", "",
                      "header nests deeper than 64 levels");
  // 64 levels in all are parsed, and refused for what they are.
  ExpectCorruptHeader(R"({"__metadata__":{"k":)" + nested(62) + "}}", "", "'k' is not a string");
}

TEST_F(SafetensorsTest, RejectsShapesWhoseSizeOverflows) {
  ExpectCorruptHeader(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", "abcd",
                      "too large");
  ExpectCorruptHeader(R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,4]}})", "abcd",
                      "too large");
}

TEST_F(SafetensorsTest, RejectsMalformedDataOffsets) {
  for (const char* offsets : {"[0]", "[0,4,8]", "[-1,4]", "[0,4.0]", "{}", "[\"0\",4]"}) {
    ExpectCorruptHeader(std::string(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":)") + offsets + "}}", "abcd",
                        "data_offsets");
  }
  ExpectCorruptHeader(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "abcd", "ends before it begins");
}

TEST_F(SafetensorsTest, RejectsOffsetsPastTheEndOfTheData) {
  ExpectCorruptHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", "abcd",
                      "tensor 'a' data range [0, 8) exceeds the data section of 4 bytes");
  ExpectCorruptHeader(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551615]}})",
                      "abcd", "exceeds the data section");
}

TEST_F(SafetensorsTest, RejectsShapeAndByteRangeMismatch) {
  ExpectCorruptHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcdefgh",
                      "holds 4 bytes but shape [2] of F32 needs 8");
  ExpectCorruptHeader(R"({"a":{"dtype":"BF16","shape":[],"data_offsets":[0,4]}})", "abcd", "needs 2");
}

TEST_F(SafetensorsTest, RejectsOverlappingRanges) {
  ExpectCorruptHeader(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                      R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                      "abcdefgh", "'a' and 'b' overlap");
  ExpectCorruptHeader(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[2,6]},)"
                      R"("b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})",
                      "abcdefgh", "overlap");
}

TEST_F(SafetensorsTest, RejectsDuplicateNames) {
  ExpectCorruptHeader(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                      R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                      "ab", "'a' twice");
}

TEST_F(SafetensorsTest, RejectsMetadataThatIsNotAStringMap) {
  ExpectCorruptHeader(R"({"__metadata__":{"format":1}})", "", "__metadata__ entry 'format'");
  ExpectCorruptHeader(R"({"__metadata__":["pt"]})", "", "__metadata__ is not an object");
}

TEST_F(SafetensorsTest, RejectsTruncatedFilesAtEveryKindOfCut) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {{"a", torch::randn({16, 8})},
                                                                {"b", torch::randn({32}).to(torch::kBFloat16)}};
  ASSERT_TRUE(WriteSafetensors(Path("full.safetensors"), tensors).ok());
  const std::string full = ReadBytes(Path("full.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, full.data(), 8);
  // Inside the prefix, inside the header, at the data start, inside each tensor, one byte short.
  for (size_t cut : {size_t{0}, size_t{4}, size_t{8}, size_t{9}, size_t{8 + n / 2}, size_t{8 + n - 1}, size_t{8 + n},
                     size_t{8 + n + 100}, size_t{8 + n + 16 * 8 * 4 + 3}, full.size() - 1}) {
    SCOPED_TRACE(cut);
    ExpectCorrupt(full.substr(0, cut), "bad.safetensors");
  }
}

TEST_F(SafetensorsTest, NeverCrashesOnRandomHeaderCorruption) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"model.embed_tokens.weight", torch::randn({8, 4})},
      {"model.norm.weight", torch::ones({4}).to(torch::kBFloat16)},
      {"ids", torch::arange(6, torch::kInt64)}};
  ASSERT_TRUE(WriteSafetensors(Path("seed.safetensors"), tensors, {{"format", "pt"}}).ok());
  const std::string original = ReadBytes(Path("seed.safetensors"));
  uint64_t n = 0;
  std::memcpy(&n, original.data(), 8);
  std::mt19937 rng(20240601);
  int accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::string bytes = original;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) {
      // Mostly the header text, sometimes the length prefix.
      size_t pos = (rng() % 10 == 0) ? rng() % 8 : 8 + rng() % n;
      bytes[pos] = static_cast<char>(rng() % 4 == 0 ? bytes[pos] ^ (1 << (rng() % 8)) : rng());
    }
    WriteBytes(Path("fuzz.safetensors"), bytes);
    StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(Path("fuzz.safetensors"));
    if (!file.ok()) {
      ASSERT_NE(file.status().message().find("fuzz.safetensors"), std::string::npos) << file.status().message();
      ASSERT_EQ(file.status().message().find('\n'), std::string::npos);
      continue;
    }
    ++accepted;
    for (const SafetensorsTensorInfo& info : (*file)->tensors()) {
      StatusOr<torch::Tensor> t = (*file)->LoadAs(info.name, torch::kFloat32, torch::kCPU);
      ASSERT_TRUE(t.ok()) << t.status().ToString();
      EXPECT_EQ(static_cast<uint64_t>(t->numel()) * SafetensorsDTypeSize(info.dtype), info.num_bytes());
    }
  }
  // Flips in padding or inside names leave valid files; most flips must be caught.
  EXPECT_LT(accepted, 3000);
}

TEST_F(SafetensorsTest, RefusesToWriteWhatTheFormatCannotHold) {
  const std::string path = Path("w.safetensors");
  ExpectError(WriteSafetensors(path, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}), StatusCode::kInvalidArgument,
              "w.safetensors");
  ExpectError(WriteSafetensors(path, {{"__metadata__", torch::ones({1})}}), StatusCode::kInvalidArgument,
              "w.safetensors");
  ExpectError(WriteSafetensors(path, {{"c", torch::ones({1}, torch::kComplexFloat)}}), StatusCode::kInvalidArgument,
              "w.safetensors");
  ExpectError(WriteSafetensors(path, {{"u", torch::Tensor()}}), StatusCode::kInvalidArgument, "w.safetensors");
  ExpectError(WriteSafetensors(path, {{"\xff", torch::ones({1})}}), StatusCode::kInvalidArgument, "w.safetensors");
  ExpectError(WriteSafetensors(Path("w.safetensors.gz"), {{"a", torch::ones({1})}}), StatusCode::kInvalidArgument,
              "w.safetensors.gz");
  EXPECT_FALSE(fs::exists(path));
}

}  // namespace
}  // namespace dtm
