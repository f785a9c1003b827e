#include "common/data_root.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

namespace dtm {
namespace {

namespace fs = std::filesystem;

// A fresh folder per test:
//   base/root/          the data root, holding probes.jsonl and sub/file.txt
//   base/rootx/file.txt beside the root, its name starting with the root's
//   base/secret.txt     outside the root
class DataRootTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Short, so that the paths below are quoted whole (common/user_text.h bounds quoted text).
    static int test_number = 0;
    base_ = fs::temp_directory_path() /
            ("dtm_data_root_" + std::to_string(::getpid()) + "_" + std::to_string(test_number++));
    fs::remove_all(base_);
    fs::create_directories(base_ / "root" / "sub");
    fs::create_directories(base_ / "rootx");
    base_ = fs::canonical(base_);
    root_dir_ = (base_ / "root").string();
    Write(base_ / "root" / "probes.jsonl");
    Write(base_ / "root" / "sub" / "file.txt");
    Write(base_ / "rootx" / "file.txt");
    Write(base_ / "secret.txt");
  }
  void TearDown() override {
    if (!old_cwd_.empty()) fs::current_path(old_cwd_);
    fs::remove_all(base_);
  }

  static void Write(const fs::path& path) { std::ofstream(path) << "x\n"; }

  DataRoot Root(const std::string& path) {
    StatusOr<DataRoot> root = DataRoot::Create(path);
    EXPECT_TRUE(root.ok()) << root.status().ToString();
    return std::move(root).value();
  }

  // Works in `dir` until the test ends.
  void ChangeDirectory(const fs::path& dir) {
    if (old_cwd_.empty()) old_cwd_ = fs::current_path();
    fs::current_path(dir);
  }

  static void ExpectOutside(const StatusOr<std::string>& resolved, const DataRoot& root) {
    ASSERT_FALSE(resolved.ok()) << *resolved;
    EXPECT_EQ(resolved.status().code(), StatusCode::kPermissionDenied) << resolved.status().ToString();
    EXPECT_NE(resolved.status().message().find(root.path()), std::string::npos)
        << resolved.status().message();
    EXPECT_EQ(resolved.status().message().find("no such"), std::string::npos) << resolved.status().message();
  }

  fs::path base_;
  std::string root_dir_;
  fs::path old_cwd_;
};

TEST_F(DataRootTest, CreateRefusesAMissingFolderWithNotFound) {
  StatusOr<DataRoot> root = DataRoot::Create((base_ / "missing").string());
  EXPECT_EQ(root.status().code(), StatusCode::kNotFound) << root.status().ToString();
  EXPECT_NE(root.status().message().find("missing"), std::string::npos) << root.status().message();
}

TEST_F(DataRootTest, CreateRefusesAFileWithInvalidArgument) {
  StatusOr<DataRoot> root = DataRoot::Create((base_ / "secret.txt").string());
  EXPECT_EQ(root.status().code(), StatusCode::kInvalidArgument) << root.status().ToString();
  EXPECT_NE(root.status().message().find("secret.txt"), std::string::npos) << root.status().message();
  EXPECT_EQ(DataRoot::Create("").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(DataRootTest, CreateKeepsTheCanonicalFolder) {
  EXPECT_EQ(Root(root_dir_).path(), root_dir_);
  EXPECT_EQ(Root(root_dir_ + "/").path(), root_dir_);
  EXPECT_EQ(Root(root_dir_ + "/./sub/..").path(), root_dir_);
  fs::create_directory_symlink(base_ / "root", base_ / "link-to-root");
  EXPECT_EQ(Root((base_ / "link-to-root").string()).path(), root_dir_);
}

TEST_F(DataRootTest, ResolveReturnsTheCanonicalPathOfAFileUnderTheRoot) {
  DataRoot root = Root(root_dir_);
  const std::string probes = root_dir_ + "/probes.jsonl";
  EXPECT_EQ(root.Resolve(probes).value(), probes);
  EXPECT_EQ(root.Resolve(root_dir_ + "/sub/../probes.jsonl").value(), probes);
  EXPECT_EQ(root.Resolve(root_dir_ + "/./sub//file.txt").value(), root_dir_ + "/sub/file.txt");
  EXPECT_EQ(root.Resolve(root_dir_).value(), root_dir_);
  // A symlink that stays under the root resolves to its target.
  fs::create_symlink(base_ / "root" / "sub" / "file.txt", base_ / "root" / "alias.txt");
  EXPECT_EQ(root.Resolve(root_dir_ + "/alias.txt").value(), root_dir_ + "/sub/file.txt");
  EXPECT_TRUE(root.Contains(probes));
}

TEST_F(DataRootTest, ResolveTakesRelativePathsAgainstTheWorkingDirectory) {
  DataRoot root = Root(root_dir_);
  ChangeDirectory(base_ / "root" / "sub");
  EXPECT_EQ(root.Resolve("file.txt").value(), root_dir_ + "/sub/file.txt");
  EXPECT_EQ(root.Resolve("../probes.jsonl").value(), root_dir_ + "/probes.jsonl");
  ExpectOutside(root.Resolve("../../secret.txt"), root);
}

TEST_F(DataRootTest, ResolveRefusesAPathOutsideTheRootWithoutRevealingWhetherItExists) {
  DataRoot root = Root(root_dir_);
  const std::string existing = root_dir_ + "/../secret.txt";
  const std::string missing = root_dir_ + "/../no-such-file.txt";
  ExpectOutside(root.Resolve(existing), root);
  ExpectOutside(root.Resolve(missing), root);
  // The same answer for both but the quoted path: nothing tells them apart.
  const std::string about_existing = root.Resolve(existing).status().message();
  const std::string about_missing = root.Resolve(missing).status().message();
  ASSERT_EQ(about_existing.rfind("'" + existing + "' ", 0), 0u) << about_existing;
  ASSERT_EQ(about_missing.rfind("'" + missing + "' ", 0), 0u) << about_missing;
  EXPECT_EQ(about_existing.substr(existing.size() + 2), about_missing.substr(missing.size() + 2));
  ExpectOutside(root.Resolve("/etc/passwd"), root);
  ExpectOutside(root.Resolve("/etc/no-such-file-for-dtm"), root);
  ExpectOutside(root.Resolve("/"), root);
  EXPECT_FALSE(root.Contains((base_ / "secret.txt").string()));
}

// The lexical check reads the whole string, the file system reads it up to its first NUL: a path
// that is under the root lexically but names a file outside the root up to its NUL must be refused
// alike whether that file exists or not. Today realpath(3) looks the outside file up, so a missing
// one is NOT_FOUND and an existing one PERMISSION_DENIED (YAML's "\0" escape puts a NUL in a spec).
TEST_F(DataRootTest, ResolveRefusesAPathWithANulWithoutRevealingWhetherTheFileBeforeItExists) {
  DataRoot root = Root(root_dir_);
  // "<outside file>\0/../../...<root>/probes.jsonl": lexically the root's file (".." at "/" stays at
  // "/"), up to the NUL the outside file.
  std::string climb;
  for (int i = 0; i < 64; ++i) climb += "/..";
  const std::string after_nul = std::string(1, '\0') + climb + root_dir_ + "/probes.jsonl";
  const std::string existing = (base_ / "secret.txt").string() + after_nul;
  const std::string missing = (base_ / "no-such-file.txt").string() + after_nul;
  StatusOr<std::string> about_existing = root.Resolve(existing);
  StatusOr<std::string> about_missing = root.Resolve(missing);
  ASSERT_FALSE(about_existing.ok()) << *about_existing;
  ASSERT_FALSE(about_missing.ok()) << *about_missing;
  EXPECT_NE(about_missing.status().code(), StatusCode::kNotFound) << about_missing.status().ToString();
  EXPECT_EQ(about_existing.status().code(), about_missing.status().code())
      << about_existing.status().ToString() << " vs " << about_missing.status().ToString();
}

// A daemon started with --data-root /data, /data being a symlink (to /mnt/disk1/data, say), is
// given files as /data/probes.jsonl. Create keeps the canonical root and Resolve checks the path
// lexically against it first, so today such a path is PERMISSION_DENIED although it resolves to a
// file under the root.
TEST_F(DataRootTest, ResolveAdmitsAPathUnderTheRootAsTheDaemonWasGivenIt) {
  fs::create_directory_symlink(base_ / "root", base_ / "link-to-root");
  const std::string given = (base_ / "link-to-root").string();
  DataRoot root = Root(given);
  StatusOr<std::string> resolved = root.Resolve(given + "/probes.jsonl");
  ASSERT_TRUE(resolved.ok()) << resolved.status().ToString();
  EXPECT_EQ(*resolved, root_dir_ + "/probes.jsonl");
  // Still nothing outside it.
  ExpectOutside(root.Resolve(given + "/../secret.txt"), root);
}

TEST_F(DataRootTest, ResolveRefusesAFolderBesideTheRootWhoseNameStartsWithTheRoots) {
  DataRoot root = Root(root_dir_);
  ExpectOutside(root.Resolve(root_dir_ + "x/file.txt"), root);
}

TEST_F(DataRootTest, ResolveRefusesASymlinkUnderTheRootThatPointsOutside) {
  DataRoot root = Root(root_dir_);
  fs::create_symlink(base_ / "secret.txt", base_ / "root" / "link.txt");
  fs::create_directory_symlink(base_, base_ / "root" / "up");
  fs::create_symlink("../secret.txt", base_ / "root" / "relative-link.txt");
  ExpectOutside(root.Resolve(root_dir_ + "/link.txt"), root);
  ExpectOutside(root.Resolve(root_dir_ + "/up/secret.txt"), root);
  ExpectOutside(root.Resolve(root_dir_ + "/relative-link.txt"), root);
  EXPECT_FALSE(root.Contains(root_dir_ + "/link.txt"));
}

TEST_F(DataRootTest, ResolveReportsAMissingFileUnderTheRootAsNotFound) {
  DataRoot root = Root(root_dir_);
  StatusOr<std::string> resolved = root.Resolve(root_dir_ + "/missing.jsonl");
  EXPECT_EQ(resolved.status().code(), StatusCode::kNotFound) << resolved.status().ToString();
  EXPECT_NE(resolved.status().message().find("missing.jsonl"), std::string::npos)
      << resolved.status().message();
  EXPECT_EQ(root.Resolve(root_dir_ + "/sub/missing/deeper.txt").status().code(), StatusCode::kNotFound);
  EXPECT_FALSE(root.Contains(root_dir_ + "/missing.jsonl"));
}

TEST_F(DataRootTest, ResolveRefusesAnEmptyPath) {
  EXPECT_EQ(Root(root_dir_).Resolve("").status().code(), StatusCode::kInvalidArgument);
}

TEST_F(DataRootTest, RootSlashAdmitsEveryPath) {
  DataRoot root = Root("/");
  EXPECT_EQ(root.path(), "/");
  EXPECT_EQ(root.Resolve((base_ / "secret.txt").string()).value(), (base_ / "secret.txt").string());
  EXPECT_EQ(root.Resolve(root_dir_ + "/../rootx/file.txt").value(), (base_ / "rootx" / "file.txt").string());
  EXPECT_EQ(root.Resolve("/").value(), "/");
  // Missing files are still NOT_FOUND.
  EXPECT_EQ(root.Resolve((base_ / "missing").string()).status().code(), StatusCode::kNotFound);
}

TEST_F(DataRootTest, QuotesALongPathBoundedInItsError) {
  DataRoot root = Root(root_dir_);
  // Outside the root, and under it (where the name is too long to exist).
  const std::string outside = "/" + std::string(9999, 'o');
  const std::string inside = root_dir_ + "/" + std::string(10000 - root_dir_.size() - 1, 'i');
  ASSERT_EQ(outside.size(), 10000u);
  ASSERT_EQ(inside.size(), 10000u);
  for (const std::string& path : {outside, inside}) {
    StatusOr<std::string> resolved = root.Resolve(path);
    ASSERT_FALSE(resolved.ok());
    const std::string& message = resolved.status().message();
    EXPECT_LT(message.size(), 1000u) << StatusCodeName(resolved.status().code()) << " "
                                     << message.substr(0, 300);
    EXPECT_NE(message.find("(10000 bytes)"), std::string::npos) << message.substr(0, 300);
  }
  ExpectOutside(root.Resolve(outside), root);
}

TEST_F(DataRootTest, QuotesControlCharactersInAPathAsQuestionMarks) {
  DataRoot root = Root(root_dir_);
  StatusOr<std::string> resolved = root.Resolve("/etc/\npasswd\x1b[0m");
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.status().message().find('\n'), std::string::npos);
  EXPECT_EQ(resolved.status().message().find('\x1b'), std::string::npos);
  EXPECT_NE(resolved.status().message().find("'/etc/?passwd?[0m'"), std::string::npos)
      << resolved.status().message();
}

}  // namespace
}  // namespace dtm
