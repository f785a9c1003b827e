// Logging: one setup of spdlog's default logger for every dtm daemon and tool.
#pragma once

#include <string>

#include "common/status.h"

namespace dtm {

// The pattern every dtm log line has: UTC time to the millisecond, level, thread id, message, e.g.
// "2026-11-23T11:37:51.123Z info [t12345] coordinator listening on :50051". The thread id tells the
// lines of concurrent tasks apart.
inline constexpr char kLogPattern[] = "%Y-%m-%dT%H:%M:%S.%eZ %l [t%t] %v";

// Makes spdlog's default logger write to stderr (where a container runtime collects it) with
// kLogPattern, at `level`: trace, debug, info, warn or error. INVALID_ARGUMENT naming the level for
// anything else, leaving the logger as it was. Call it once at start-up, before other threads log;
// calling it again replaces the logger.
Status InitLogging(const std::string& level);

}  // namespace dtm
