// dtm's version, and which peers a coordinator works with.
#pragma once

#include <string>
#include <string_view>

namespace dtm {

// MAJOR.MINOR.PATCH. MINOR goes up when the wire meaning of a message changes (a field workers must
// set, a result that means something else); PATCH for anything else.
// 0.3.0: workers must run TASK_KIND_TEXT_WINDOWS (a job's `ppl:`); a 0.2 worker would fail such a
// task as one no worker can run, failing its job.
inline constexpr char kDtmVersion[] = "0.3.0";

// Whether a worker reporting `worker_version` may serve a coordinator of kDtmVersion: the same MAJOR
// and MINOR (before 1.0 a minor release may change what tasks and results mean). An empty or
// malformed version is not compatible.
bool IsCompatibleWorkerVersion(std::string_view worker_version);

// What `--version` prints: "PROGRAM 0.3.0 (commit 1a2b3c4d5e6f, Release build[, EXTRA])". The commit
// and build type are the source tree's when CMake configured the build ("unknown" outside git).
std::string VersionText(std::string_view program, std::string_view extra = "");

}  // namespace dtm
