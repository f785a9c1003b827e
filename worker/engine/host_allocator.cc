#include "worker/engine/host_allocator.h"

#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <string>

#if defined(__GLIBC__)
#include <malloc.h>
#include <unistd.h>
#endif

namespace dtm {
namespace {

// name=value pairs, as glibc.malloc's tunables spell them.
constexpr const char* kSettings[] = {
    "glibc.malloc.mmap_threshold=33554432",
    "glibc.malloc.trim_threshold=1073741824",
    "glibc.malloc.arena_max=1",
};

// True when `list` (colon-separated name=value) already names the tunable of `setting`, with any
// value: a user's own choice wins.
bool Names(const std::string& list, const char* setting) {
  const std::string name = std::string(setting).substr(0, std::strchr(setting, '=') - setting + 1);
  size_t at = 0;
  while (at <= list.size()) {
    const size_t end = std::min(list.find(':', at), list.size());
    if (list.compare(at, name.size(), name) == 0 && end - at >= name.size()) return true;
    at = end + 1;
  }
  return false;
}

}  // namespace

const char* HostAllocatorTunables(const char* inherited) {
  static std::string value;
  value = inherited != nullptr ? inherited : "";
  bool changed = false;
  for (const char* setting : kSettings) {
    if (Names(value, setting)) continue;
    if (!value.empty()) value += ':';
    value += setting;
    changed = true;
  }
  return changed ? value.c_str() : inherited;
}

void TuneHostAllocator(char** argv) {
#if defined(__GLIBC__)
  const char* mode = std::getenv("DTM_HOST_ALLOCATOR");
  if (mode != nullptr && std::strcmp(mode, "default") == 0) return;
  const char* env = std::getenv("GLIBC_TUNABLES");
  const std::string inherited = env != nullptr ? env : "";
  const char* wanted = HostAllocatorTunables(env);
  // Already running under them (this is the re-executed process, or the user set them).
  if (wanted == env) return;
  // A marker against an exec loop should glibc ever drop a tunable it does not know.
  if (std::getenv("DTM_HOST_ALLOCATOR_REEXEC") == nullptr && argv != nullptr) {
    setenv("GLIBC_TUNABLES", wanted, 1);
    setenv("DTM_HOST_ALLOCATOR_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    // exec failed (no /proc, say): restore what the user had and fall back to mallopt.
    if (env != nullptr) {
      setenv("GLIBC_TUNABLES", inherited.c_str(), 1);
    } else {
      unsetenv("GLIBC_TUNABLES");
    }
  }
  TuneHostAllocatorInProcess();
#else
  (void)argv;
#endif
}

void TuneHostAllocatorInProcess() {
#if defined(__GLIBC__)
  const char* mode = std::getenv("DTM_HOST_ALLOCATOR");
  if (mode != nullptr && std::strcmp(mode, "default") == 0) return;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace dtm
