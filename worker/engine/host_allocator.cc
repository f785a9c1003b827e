#include "worker/engine/host_allocator.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace dtm {

void TuneHostAllocator() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace dtm
