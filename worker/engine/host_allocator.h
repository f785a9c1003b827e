// How the process's C allocator hands memory to libtorch's CPU tensors, set once at start by the
// programs that run the engine (dtm-worker, dtmctl).
#pragma once

namespace dtm {

// glibc by default returns freed memory to the kernel eagerly (heap trimming, and mmap for
// allocations above a threshold it keeps adjusting), so a forward that allocates and frees tensors
// of a few hundred KB to tens of MB pays page faults and page-table updates for the same memory
// again and again; with residual streams kept alive between forwards (activation_cache.h) the
// freed holes no longer coalesce and the churn grew until reuse ran slower than full forwards.
// Measured on this project's 2-core VM (bench/reuse_bench.py's 16-layer quant-search, depth 2):
// 199 s without streams and 208 s with them under glibc's defaults; 154 s and 90 s with these
// settings: allocations below 32 MB (glibc's ceiling for this threshold) come from the heap, and up
// to 1 GB of freed heap stays with the process. The cost: the process keeps its high-water mark of
// host memory, which a worker that owns its machine (or GPU's host) wants anyway.
// No-op on a C library other than glibc.
void TuneHostAllocator();

}  // namespace dtm
