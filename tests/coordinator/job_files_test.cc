#include "coordinator/job_files.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace dtm {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMaxFileBytes = 1 << 20;

// A fresh folder per test:
//   base/data/            the data root: probes.jsonl (3 probes of 5 tokens), prev.json, model/config.json
//   base/outside.jsonl    a probe file outside the root
//   base/outside-model/   a model folder outside the root
class JobFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int test_number = 0;
    base_ = fs::temp_directory_path() /
            ("dtm_job_files_" + std::to_string(::getpid()) + "_" + std::to_string(test_number++));
    fs::remove_all(base_);
    fs::create_directories(base_ / "data" / "model");
    fs::create_directories(base_ / "outside-model");
    base_ = fs::canonical(base_);
    root_ = (base_ / "data").string();
    const std::string probes =
        "{\"id\":\"p0\",\"tokens\":[1,2,3,4,5]}\n"
        "{\"id\":\"p1\",\"tokens\":[6,7,8,9,10]}\n"
        "{\"id\":\"p2\",\"tokens\":[11,12,13,14,15]}\n";
    Write(base_ / "data" / "probes.jsonl", probes);
    Write(base_ / "outside.jsonl", probes);
    Write(base_ / "data" / "prev.json", "[]");
    Write(base_ / "data" / "model" / "config.json", Config(3));
    Write(base_ / "outside-model" / "config.json", Config(5));
  }
  void TearDown() override { fs::remove_all(base_); }

  static void Write(const fs::path& path, const std::string& text) { std::ofstream(path) << text; }

  // A Llama config.json of `layers` layers.
  static std::string Config(int layers) {
    return "{\"num_hidden_layers\": " + std::to_string(layers) +
           ", \"hidden_size\": 8, \"intermediate_size\": 16, \"num_attention_heads\": 2}";
  }

  JobFiles Files(bool read_model_configs = true, uint64_t max_file_bytes = kMaxFileBytes) {
    StatusOr<JobFiles> files = JobFiles::Create(root_, max_file_bytes, read_model_configs);
    EXPECT_TRUE(files.ok()) << files.status().ToString();
    return std::move(files).value();
  }

  // A spec naming the probe file under the root, resolved.
  JobSpec Spec(int64_t num_probes, int64_t prefix_len) {
    JobSpec spec;
    spec.probes = root_ + "/probes.jsonl";
    spec.num_probes = num_probes;
    spec.prefix_len = prefix_len;
    return spec;
  }

  static void ExpectInvalidNaming(const Status& status, const std::vector<std::string>& names) {
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << status.ToString();
    for (const std::string& name : names)
      EXPECT_NE(status.message().find(name), std::string::npos) << status.message();
  }

  fs::path base_;
  std::string root_;
};

TEST_F(JobFilesTest, CreateRefusesADataRootThatIsNotAFolder) {
  StatusOr<JobFiles> missing = JobFiles::Create((base_ / "missing").string(), kMaxFileBytes, true);
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound) << missing.status().ToString();
  EXPECT_NE(missing.status().message().find("missing"), std::string::npos) << missing.status().message();
  StatusOr<JobFiles> file = JobFiles::Create((base_ / "outside.jsonl").string(), kMaxFileBytes, true);
  EXPECT_EQ(file.status().code(), StatusCode::kInvalidArgument) << file.status().ToString();
  EXPECT_NE(file.status().message().find("outside.jsonl"), std::string::npos) << file.status().message();
}

TEST_F(JobFilesTest, ReadsEveryFileWithinTheLimitsOfAnUntrustedCaller) {
  JobFiles files = Files(true, 12345);
  EXPECT_EQ(files.root(), root_);
  EXPECT_EQ(files.limits().max_bytes, 12345u);
  EXPECT_TRUE(files.limits().regular_file_only);
  EXPECT_FALSE(files.limits().quote_content);
}

// ---------------------------------------------------------------------------------------------
// ResolvePaths

TEST_F(JobFilesTest, ResolvePathsReplacesProbesAndPreviousByTheirCanonicalPaths) {
  JobSpec spec;
  spec.probes = root_ + "/./model/../probes.jsonl";
  spec.previous = root_ + "//prev.json";
  ASSERT_TRUE(Files().ResolvePaths(&spec).ok());
  EXPECT_EQ(spec.probes, root_ + "/probes.jsonl");
  EXPECT_EQ(spec.previous, root_ + "/prev.json");
}

TEST_F(JobFilesTest, ResolvePathsLeavesAnEmptyPreviousEmpty) {
  JobSpec spec;
  spec.probes = root_ + "/probes.jsonl";
  ASSERT_TRUE(Files().ResolvePaths(&spec).ok());
  EXPECT_EQ(spec.previous, "");
}

TEST_F(JobFilesTest, ResolvePathsRefusesProbesOutsideTheRootOrMissingNamingTheField) {
  for (const std::string& path : {(base_ / "outside.jsonl").string(), root_ + "/../outside.jsonl",
                                  std::string("/etc/passwd"), root_ + "/missing.jsonl", std::string("")}) {
    SCOPED_TRACE(path);
    JobSpec spec;
    spec.probes = path;
    ExpectInvalidNaming(Files().ResolvePaths(&spec), {"probes"});
  }
  // Outside: the message names the data root.
  JobSpec spec;
  spec.probes = (base_ / "outside.jsonl").string();
  ExpectInvalidNaming(Files().ResolvePaths(&spec), {"probes", "outside.jsonl", root_});
}

TEST_F(JobFilesTest, ResolvePathsRefusesAPreviousRoundOutsideTheRootNamingTheField) {
  fs::create_symlink(base_ / "outside.jsonl", base_ / "data" / "link.json");
  for (const std::string& path :
       {(base_ / "outside.jsonl").string(), root_ + "/link.json", root_ + "/missing.json"}) {
    SCOPED_TRACE(path);
    JobSpec spec;
    spec.probes = root_ + "/probes.jsonl";
    spec.previous = path;
    Status status = Files().ResolvePaths(&spec);
    ExpectInvalidNaming(status, {"previous"});
    EXPECT_EQ(status.message().find("probes"), std::string::npos) << status.message();
  }
}

// ---------------------------------------------------------------------------------------------
// LoadProbes

TEST_F(JobFilesTest, LoadProbesTakesTheFirstNumProbesCutToThePrefix) {
  StatusOr<ProbeSet> set = Files().LoadProbes(Spec(2, 3));
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  ASSERT_EQ(set->probes.size(), 2u);
  EXPECT_EQ(set->probes[0].id, "p0");
  EXPECT_EQ(set->probes[0].tokens, (std::vector<int32_t>{1, 2, 3}));
  EXPECT_EQ(set->probes[1].id, "p1");
  EXPECT_EQ(set->probes[1].tokens, (std::vector<int32_t>{6, 7, 8}));
}

TEST_F(JobFilesTest, LoadProbesTakesEveryProbeWhenNumProbesIsZero) {
  StatusOr<ProbeSet> set = Files().LoadProbes(Spec(0, 5));
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  ASSERT_EQ(set->probes.size(), 3u);
  EXPECT_EQ(set->probes[2].tokens, (std::vector<int32_t>{11, 12, 13, 14, 15}));
  // Exactly as many as the file holds is fine too.
  EXPECT_EQ(Files().LoadProbes(Spec(3, 5)).value().probes.size(), 3u);
}

TEST_F(JobFilesTest, LoadProbesRefusesMoreProbesThanTheFileHolds) {
  ExpectInvalidNaming(Files().LoadProbes(Spec(4, 3)).status(), {"num_probes", "4", "3"});
}

TEST_F(JobFilesTest, LoadProbesRefusesAPrefixBeyondAProbeNamingTheProbe) {
  ExpectInvalidNaming(Files().LoadProbes(Spec(0, 6)).status(), {"prefix", "6", "probe #1"});
  Write(base_ / "data" / "ragged.jsonl",
        "{\"id\":\"a\",\"tokens\":[1,2,3,4]}\n{\"id\":\"b\",\"tokens\":[1,2]}\n");
  JobSpec spec = Spec(0, 3);
  spec.probes = root_ + "/ragged.jsonl";
  ExpectInvalidNaming(Files().LoadProbes(spec).status(), {"prefix", "probe #2", "ragged.jsonl"});
  // Only the probes taken are checked.
  spec.num_probes = 1;
  EXPECT_TRUE(Files().LoadProbes(spec).ok());
}

TEST_F(JobFilesTest, LoadProbesNamesTheProbesFieldAndKeepsTheFileContentOutOfErrors) {
  Write(base_ / "data" / "secret.jsonl", "{\"id\":\"a\",\"tokens\":[1]}\n\"SECRET-VALUE-123\n");
  JobSpec spec = Spec(0, 1);
  spec.probes = root_ + "/secret.jsonl";
  Status status = Files().LoadProbes(spec).status();
  ExpectInvalidNaming(status, {"probes", "secret.jsonl"});
  EXPECT_EQ(status.message().find("SECRET"), std::string::npos) << status.message();

  Write(base_ / "data" / "not-probes.jsonl", "{\"name\":\"SECRET-VALUE-123\"}\n");
  spec.probes = root_ + "/not-probes.jsonl";
  status = Files().LoadProbes(spec).status();
  ExpectInvalidNaming(status, {"probes", "not-probes.jsonl"});
  EXPECT_EQ(status.message().find("SECRET"), std::string::npos) << status.message();
}

TEST_F(JobFilesTest, LoadProbesRefusesAFileLargerThanTheLimit) {
  const uint64_t size = fs::file_size(base_ / "data" / "probes.jsonl");
  EXPECT_TRUE(Files(true, size).LoadProbes(Spec(0, 3)).ok());
  ExpectInvalidNaming(Files(true, size - 1).LoadProbes(Spec(0, 3)).status(),
                      {"probes", std::to_string(size - 1)});
}

// ---------------------------------------------------------------------------------------------
// LoadPplText: one task carries the text (TextWindowsInput), so it is bounded by kMaxPplTextBytes
// whatever --max-file-bytes allows.

TEST_F(JobFilesTest, LoadPplTextReadsAResolvedTextUpToItsOwnLimit) {
  Write(base_ / "data" / "text.txt", "line one\n \nline two\n");
  JobSpec spec = Spec(0, 3);
  spec.ppl_text = root_ + "/./model/../text.txt";
  ASSERT_TRUE(Files().ResolvePaths(&spec).ok());
  EXPECT_EQ(spec.ppl_text, root_ + "/text.txt");
  StatusOr<std::string> text = Files().LoadPplText(spec);
  ASSERT_TRUE(text.ok()) << text.status().ToString();
  EXPECT_EQ(*text, "line one\n \nline two\n");  // the bytes as they are: the worker joins them

  Write(base_ / "data" / "big.txt", std::string(kMaxPplTextBytes + 1, 'a'));
  spec.ppl_text = root_ + "/big.txt";
  ExpectInvalidNaming(Files(true, 0).LoadPplText(spec).status(), {"ppl.text", std::to_string(kMaxPplTextBytes)});
  Write(base_ / "data" / "big.txt", std::string(kMaxPplTextBytes, 'a'));
  EXPECT_TRUE(Files(true, 0).LoadPplText(spec).ok());

  spec.ppl_text = root_ + "/../outside.jsonl";
  ExpectInvalidNaming(Files().ResolvePaths(&spec), {"ppl.text", "outside.jsonl"});
}

// ---------------------------------------------------------------------------------------------
// ModelConfigGeometry

TEST_F(JobFilesTest, ModelConfigGeometryReadsAConfigUnderTheRoot) {
  std::optional<ModelGeometry> geometry = Files().ModelConfigGeometry(root_ + "/model");
  ASSERT_TRUE(geometry.has_value());
  EXPECT_EQ(geometry->num_layers, 3);
  EXPECT_EQ(geometry->component_params.size(), 3u * 7u);
  EXPECT_EQ(geometry->component_params.at("model.layers.2.mlp.down_proj"), 8u * 16u);
}

TEST_F(JobFilesTest, ModelConfigGeometryIsNulloptForAModelOutsideTheRoot) {
  JobFiles files = Files();
  EXPECT_FALSE(files.ModelConfigGeometry((base_ / "outside-model").string()).has_value());
  EXPECT_FALSE(files.ModelConfigGeometry(root_ + "/../outside-model").has_value());
  // Through a symlinked folder, and through a symlinked config.json.
  fs::create_directory_symlink(base_ / "outside-model", base_ / "data" / "linked-model");
  EXPECT_FALSE(files.ModelConfigGeometry(root_ + "/linked-model").has_value());
  fs::create_directories(base_ / "data" / "model-with-link");
  fs::create_symlink(base_ / "outside-model" / "config.json",
                     base_ / "data" / "model-with-link" / "config.json");
  EXPECT_FALSE(files.ModelConfigGeometry(root_ + "/model-with-link").has_value());
  // A missing one too.
  EXPECT_FALSE(files.ModelConfigGeometry(root_ + "/no-model").has_value());
}

TEST_F(JobFilesTest, ModelConfigGeometryIsNulloptWhenConfigsMayNotBeRead) {
  EXPECT_FALSE(Files(/*read_model_configs=*/false).ModelConfigGeometry(root_ + "/model").has_value());
}

TEST_F(JobFilesTest, ModelConfigGeometryIsNulloptForAConfigLargerThanTheLimit) {
  const uint64_t size = fs::file_size(base_ / "data" / "model" / "config.json");
  EXPECT_TRUE(Files(true, size).ModelConfigGeometry(root_ + "/model").has_value());
  EXPECT_FALSE(Files(true, size - 1).ModelConfigGeometry(root_ + "/model").has_value());
}

}  // namespace
}  // namespace dtm
