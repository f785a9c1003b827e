#include "common/version.h"

// Set by common/CMakeLists.txt at configure time; a build outside it knows neither.
#ifndef DTM_GIT_COMMIT
#define DTM_GIT_COMMIT "unknown"
#endif
#ifndef DTM_BUILD_TYPE
#define DTM_BUILD_TYPE "unknown"
#endif

namespace dtm {
namespace {

// "MAJOR.MINOR" of a "MAJOR.MINOR.PATCH" version (digits only), or "" when it is not one.
std::string_view MajorMinor(std::string_view version) {
  int dots = 0;
  size_t minor_end = std::string_view::npos;
  bool digit_before = false;
  for (size_t i = 0; i < version.size(); ++i) {
    const char c = version[i];
    if (c == '.') {
      if (!digit_before || ++dots > 2) return {};
      if (dots == 2) minor_end = i;
      digit_before = false;
    } else if (c >= '0' && c <= '9') {
      digit_before = true;
    } else {
      return {};
    }
  }
  if (dots != 2 || !digit_before) return {};
  return version.substr(0, minor_end);
}

}  // namespace

bool IsCompatibleWorkerVersion(std::string_view worker_version) {
  const std::string_view theirs = MajorMinor(worker_version);
  return !theirs.empty() && theirs == MajorMinor(kDtmVersion);
}

std::string VersionText(std::string_view program, std::string_view extra) {
  std::string build_type = DTM_BUILD_TYPE;
  if (build_type.empty()) build_type = "default";
  std::string text = std::string(program) + " " + kDtmVersion + " (commit " + DTM_GIT_COMMIT + ", " + build_type + " build";
  if (!extra.empty()) text += ", " + std::string(extra);
  return text + ")";
}

}  // namespace dtm
