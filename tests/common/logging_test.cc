#include "common/logging.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <regex>
#include <string>

namespace dtm {
namespace {

TEST(LoggingTest, AcceptsEveryDocumentedLevel) {
  const std::pair<const char*, spdlog::level::level_enum> levels[] = {{"trace", spdlog::level::trace},
                                                                      {"debug", spdlog::level::debug},
                                                                      {"info", spdlog::level::info},
                                                                      {"warn", spdlog::level::warn},
                                                                      {"error", spdlog::level::err}};
  for (const auto& [name, level] : levels) {
    ASSERT_TRUE(InitLogging(name).ok()) << name;
    EXPECT_EQ(spdlog::default_logger()->level(), level) << name;
  }
}

TEST(LoggingTest, RejectsAnUnknownLevelNamingItAndKeepsTheLogger) {
  ASSERT_TRUE(InitLogging("warn").ok());
  for (const char* level : {"verbose", "INFO", ""}) {
    Status status = InitLogging(level);
    EXPECT_EQ(status.code(), StatusCode::kInvalidArgument) << level;
    EXPECT_NE(status.message().find(std::string("'") + level + "'"), std::string::npos) << status.message();
  }
  EXPECT_EQ(spdlog::default_logger()->level(), spdlog::level::warn);
}

TEST(LoggingTest, WritesTimeLevelAndThreadIdToStderr) {
  ASSERT_TRUE(InitLogging("info").ok());
  ::testing::internal::CaptureStderr();
  spdlog::debug("hidden below the level");
  spdlog::info("lease granted to {}", "worker-1");
  spdlog::default_logger()->flush();
  const std::string output = ::testing::internal::GetCapturedStderr();
  const std::string tid = std::to_string(static_cast<long>(syscall(SYS_gettid)));
  const std::regex line(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info \[t)" + tid +
                        R"(\] lease granted to worker-1\n)");
  EXPECT_TRUE(std::regex_match(output, line)) << output;
}

}  // namespace
}  // namespace dtm
