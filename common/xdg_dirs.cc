#include "common/xdg_dirs.h"

#include <cstdlib>

namespace dtm {

std::optional<std::string> XdgDir(const char* variable, const char* under_home) {
  const char* value = std::getenv(variable);
  if (value != nullptr && value[0] == '/') return std::string(value);
  const char* home = std::getenv("HOME");
  if (home != nullptr && home[0] != '\0') return std::string(home) + under_home;
  return std::nullopt;
}

}  // namespace dtm
