// How an exception from libtorch (or the C++ runtime under it) becomes a Status, at the one place
// per engine entry point that catches it.
//
// Running out of memory is RESOURCE_EXHAUSTED, whatever raised it: c10::OutOfMemoryError (CUDA's
// caching allocator), the CPU allocator's c10::Error, std::bad_alloc. The
// worker reads that code as "this worker ran out of memory" (another worker, or a smaller batch,
// may run the task) rather than as an engine failure (INTERNAL). Inputs are checked before they
// reach libtorch (common/input_checks.h), so any other exception is INTERNAL.
#pragma once

#include <exception>
#include <string>

#include "common/status.h"

namespace dtm {

// `context`: what was running ("greedy generation failed"); the message is `context: ` followed by
// the exception's first line, without libtorch's backtrace.
Status StatusFromException(const std::exception& e, const std::string& context);

// True for the exceptions StatusFromException maps to RESOURCE_EXHAUSTED.
bool IsOutOfMemory(const std::exception& e);

}  // namespace dtm
