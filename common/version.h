// dtm's version, and which peers a coordinator works with.
#pragma once

#include <string_view>

namespace dtm {

// MAJOR.MINOR.PATCH. MINOR goes up when the wire meaning of a message changes (a field workers must
// set, a result that means something else); PATCH for anything else.
inline constexpr char kDtmVersion[] = "0.2.0";

// Whether a worker reporting `worker_version` may serve a coordinator of kDtmVersion: the same MAJOR
// and MINOR (before 1.0 a minor release may change what tasks and results mean). An empty or
// malformed version is not compatible.
bool IsCompatibleWorkerVersion(std::string_view worker_version);

}  // namespace dtm
