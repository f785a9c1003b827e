// XdgDir: the base-directory rule both dtmctl local's store and dtmctl compare's cache follow.
#include "common/xdg_dirs.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace dtm {
namespace {

TEST(XdgDirsTest, AnAbsoluteVariableWinsARelativeOneFallsBackToHomeAndNeitherIsNone) {
  setenv("HOME", "/home/ada", 1);
  setenv("XDG_DATA_HOME", "/data/ada", 1);
  EXPECT_EQ(XdgDir("XDG_DATA_HOME", "/.local/share"), std::optional<std::string>("/data/ada"));
  setenv("XDG_DATA_HOME", "relative/data", 1);  // invalid by the spec: ignored
  EXPECT_EQ(XdgDir("XDG_DATA_HOME", "/.local/share"), std::optional<std::string>("/home/ada/.local/share"));
  unsetenv("XDG_DATA_HOME");
  EXPECT_EQ(XdgDir("XDG_DATA_HOME", "/.local/share"), std::optional<std::string>("/home/ada/.local/share"));
  setenv("HOME", "", 1);
  EXPECT_EQ(XdgDir("XDG_DATA_HOME", "/.local/share"), std::nullopt);
  unsetenv("HOME");
  EXPECT_EQ(XdgDir("XDG_CACHE_HOME", "/.cache"), std::nullopt);
}

}  // namespace
}  // namespace dtm
