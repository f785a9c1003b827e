#include "common/version.h"

#include <gtest/gtest.h>

#include <string>

namespace dtm {
namespace {

class VersionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The versions below are made from kDtmVersion, so that the tests hold across releases.
    const std::string version = kDtmVersion;
    const size_t first = version.find('.');
    const size_t second = version.find('.', first + 1);
    ASSERT_NE(first, std::string::npos) << version;
    ASSERT_NE(second, std::string::npos) << version;
    major_ = std::stoi(version.substr(0, first));
    minor_ = std::stoi(version.substr(first + 1, second - first - 1));
    patch_ = std::stoi(version.substr(second + 1));
  }

  static std::string Version(int major, int minor, int patch) {
    return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  }

  int major_ = 0, minor_ = 0, patch_ = 0;
};

TEST_F(VersionTest, OwnVersionIsMajorMinorPatch) { EXPECT_EQ(Version(major_, minor_, patch_), kDtmVersion); }

TEST_F(VersionTest, AcceptsItsOwnVersionAndAnyPatchOfIt) {
  EXPECT_TRUE(IsCompatibleWorkerVersion(kDtmVersion));
  EXPECT_TRUE(IsCompatibleWorkerVersion(Version(major_, minor_, patch_ + 1)));
  EXPECT_TRUE(IsCompatibleWorkerVersion(Version(major_, minor_, 0)));
  EXPECT_TRUE(IsCompatibleWorkerVersion(Version(major_, minor_, 1234)));
}

TEST_F(VersionTest, RefusesAnotherMinor) {
  EXPECT_FALSE(IsCompatibleWorkerVersion(Version(major_, minor_ + 1, patch_)));
  if (minor_ > 0) {
    EXPECT_FALSE(IsCompatibleWorkerVersion(Version(major_, minor_ - 1, patch_)));
  }
  // A minor that starts with this one's digits is another minor (0.2 is not 0.20).
  EXPECT_FALSE(IsCompatibleWorkerVersion(std::to_string(major_) + "." + std::to_string(minor_) + "0." +
                                         std::to_string(patch_)));
}

TEST_F(VersionTest, RefusesAnotherMajor) {
  EXPECT_FALSE(IsCompatibleWorkerVersion(Version(major_ + 1, minor_, patch_)));
  EXPECT_FALSE(IsCompatibleWorkerVersion(Version(major_ + 10, minor_, patch_)));
  EXPECT_FALSE(IsCompatibleWorkerVersion("1" + std::string(kDtmVersion)));
}

TEST_F(VersionTest, RefusesAnEmptyVersion) { EXPECT_FALSE(IsCompatibleWorkerVersion("")); }

TEST_F(VersionTest, RefusesMalformedVersions) {
  const std::string mm = std::to_string(major_) + "." + std::to_string(minor_);
  for (const std::string& bad :
       {mm, mm + ".", mm + ".x", "v" + std::string(kDtmVersion), std::string(kDtmVersion) + "-rc1",
        std::string(kDtmVersion) + ".1", " " + std::string(kDtmVersion), std::string(kDtmVersion) + " ",
        std::string(kDtmVersion) + "\n", "." + mm + ".0",
        std::to_string(major_) + ".." + std::to_string(minor_), mm + "..0", std::string("a.b.c"),
        std::string("..."), std::string(".")}) {
    EXPECT_FALSE(IsCompatibleWorkerVersion(bad)) << "'" << bad << "'";
  }
}

}  // namespace
}  // namespace dtm
