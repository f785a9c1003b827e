// How the process's C allocator hands memory to libtorch's CPU tensors, set once at start by the
// programs that run the engine (dtm-worker, dtmctl).
#pragma once

namespace dtm {

// glibc by default returns freed memory to the kernel eagerly (heap trimming, and mmap for
// allocations above a threshold it keeps adjusting) and gives threads heaps of their own, so a
// forward that allocates and frees tensors of a few hundred KB to tens of MB pays page faults and
// page-table updates for the same memory again and again; with residual streams kept alive between
// forwards (activation_cache.h) the freed holes no longer coalesce and the churn grew until reuse
// ran slower than full forwards. The settings: allocations below 32 MB (glibc's ceiling for this
// threshold) come from the heap, up to 1 GB of freed heap stays with the process, and one arena
// serves every thread. The cost: the process keeps its high-water mark of host memory, which a
// worker that owns its machine (or GPU's host) wants anyway, and threads share one heap lock.
//
// They only take full effect from the environment (GLIBC_TUNABLES, read before libtorch's static
// initialisers run and start threads); set by mallopt in main, the thresholds helped less and the
// arena limit not at all (measured: README, "Reused residual streams"). So the first call re-executes
// the program (/proc/self/exe, same argv and pid) with the settings added to GLIBC_TUNABLES, unless
// they are there already or DTM_HOST_ALLOCATOR=default (which keeps glibc's defaults altogether).
// If the re-exec fails, the thresholds are set by mallopt and the program goes on.
// No-op on a C library other than glibc.
void TuneHostAllocator(char** argv);

// Without a re-exec: the two thresholds by mallopt (arena_max has no effect that way), unless
// DTM_HOST_ALLOCATOR=default. For short-lived commands, which should not load libtorch twice.
void TuneHostAllocatorInProcess();

// The GLIBC_TUNABLES value TuneHostAllocator runs the program under, given the inherited one
// (nullptr when unset): the inherited settings first, dtm's appended unless already present.
// Returns the inherited value unchanged when every setting is there (then no re-exec is needed).
const char* HostAllocatorTunables(const char* inherited);

}  // namespace dtm
