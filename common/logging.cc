#include "common/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <map>
#include <memory>

namespace dtm {

namespace {

constexpr char kLoggerName[] = "dtm";

}  // namespace

Status InitLogging(const std::string& level) {
  static const std::map<std::string, spdlog::level::level_enum> kLevels = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug}, {"info", spdlog::level::info},
      {"warn", spdlog::level::warn},   {"error", spdlog::level::err},
  };
  auto it = kLevels.find(level);
  if (it == kLevels.end()) {
    return InvalidArgumentError("log level '" + level + "' is not one of trace, debug, info, warn, error");
  }
  try {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::logger>(kLoggerName, std::move(sink));
    // UTC, so that the lines of daemons on different hosts sort together.
    logger->set_formatter(
        std::make_unique<spdlog::pattern_formatter>(kLogPattern, spdlog::pattern_time_type::utc));
    logger->set_level(it->second);
    // Warnings and errors reach the container log even if the process then dies.
    logger->flush_on(spdlog::level::warn);
    spdlog::set_default_logger(std::move(logger));
  } catch (const spdlog::spdlog_ex& e) {
    return InternalError(std::string("cannot set up logging: ") + e.what());
  }
  return OkStatus();
}

}  // namespace dtm
