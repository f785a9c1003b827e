#include "worker/engine/engine_error.h"

#include <new>

#include <c10/util/Exception.h>

namespace dtm {

bool IsOutOfMemory(const std::exception& e) {
  if (dynamic_cast<const c10::OutOfMemoryError*>(&e) != nullptr) return true;
  if (dynamic_cast<const std::bad_alloc*>(&e) != nullptr) return true;
  // The CPU allocator raises a plain c10::Error ("DefaultCPUAllocator: can't allocate memory: ..."
  // in libtorch 1.13, "... not enough memory: ..." later), and C10_CUDA_CHECK one saying
  // "CUDA error: out of memory".
  const std::string what = e.what();
  for (const char* needle : {"out of memory", "not enough memory", "can't allocate memory"}) {
    if (what.find(needle) != std::string::npos) return true;
  }
  return false;
}

Status StatusFromException(const std::exception& e, const std::string& context) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string what = c10_error != nullptr ? c10_error->what_without_backtrace() : e.what();
  what = what.substr(0, what.find('\n'));  // one line; libtorch appends source context on later lines
  return Status(IsOutOfMemory(e) ? StatusCode::kResourceExhausted : StatusCode::kInternal, context + ": " + what);
}

}  // namespace dtm
