#include "worker/engine/host_allocator.h"

#include <gtest/gtest.h>
#include <malloc.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace dtm {
namespace {

constexpr const char* kAll =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824:glibc.malloc.arena_max=1";

TEST(HostAllocatorTest, TunablesAreAddedAfterTheUsersOwn) {
  EXPECT_STREQ(HostAllocatorTunables(nullptr), kAll);
  EXPECT_STREQ(HostAllocatorTunables(""), kAll);
  EXPECT_EQ(HostAllocatorTunables("glibc.malloc.tcache_count=0"),
            std::string("glibc.malloc.tcache_count=0:") + kAll);
}

TEST(HostAllocatorTest, ASettingTheUserMadeKeepsTheUsersValue) {
  EXPECT_EQ(HostAllocatorTunables("glibc.malloc.arena_max=4"),
            std::string("glibc.malloc.arena_max=4:glibc.malloc.mmap_threshold=33554432:"
                        "glibc.malloc.trim_threshold=1073741824"));
  // A name that only starts like one of ours is another tunable.
  EXPECT_EQ(HostAllocatorTunables("glibc.malloc.arena_max_x=4"), std::string("glibc.malloc.arena_max_x=4:") + kAll);
}

TEST(HostAllocatorTest, EverySettingPresentMeansNoReexec) {
  // The same pointer back is the signal TuneHostAllocator reads as "already running under them".
  const char* all = kAll;
  EXPECT_EQ(HostAllocatorTunables(all), all);
  const std::string reordered =
      "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=1:glibc.malloc.mmap_threshold=4096";
  EXPECT_EQ(HostAllocatorTunables(reordered.c_str()), reordered.c_str());
}

// Run only in the process ReexecRunsUnderTheTunables re-executes: reports the environment it got
// and how many malloc arenas four threads that allocate at once end up with (glibc's malloc_info
// lists one <heap> per arena; arena_max=1 keeps them all on the main arena).
TEST(HostAllocatorTest, ChildReport) {
  const char* out = std::getenv("DTM_HOST_ALLOCATOR_TEST_OUT");
  if (out == nullptr) GTEST_SKIP() << "run by ReexecRunsUnderTheTunables";
  std::vector<std::thread> threads;
  std::vector<void*> blocks(4);
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&blocks, i] {
      blocks[i] = std::malloc(1000);
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    });
  }
  for (auto& t : threads) t.join();
  char* info = nullptr;
  size_t size = 0;
  FILE* stream = open_memstream(&info, &size);
  malloc_info(0, stream);
  std::fclose(stream);
  int heaps = 0;
  for (size_t at = std::string(info).find("<heap nr="); at != std::string::npos;
       at = std::string(info).find("<heap nr=", at + 1)) {
    ++heaps;
  }
  std::free(info);
  for (void* b : blocks) std::free(b);
  std::ofstream(out) << (std::getenv("GLIBC_TUNABLES") ? std::getenv("GLIBC_TUNABLES") : "") << "\n" << heaps << "\n";
}

std::string RunChild(const char* mode) {
  const std::string out = testing::TempDir() + "/host_allocator_child.txt";
  std::remove(out.c_str());
  const pid_t pid = fork();
  if (pid == 0) {
    unsetenv("GLIBC_TUNABLES");
    unsetenv("DTM_HOST_ALLOCATOR_REEXEC");
    if (mode != nullptr) setenv("DTM_HOST_ALLOCATOR", mode, 1);
    setenv("DTM_HOST_ALLOCATOR_TEST_OUT", out.c_str(), 1);
    std::string self(4096, '\0');
    self.resize(readlink("/proc/self/exe", self.data(), self.size()));
    std::string filter = "--gtest_filter=HostAllocatorTest.ChildReport";
    char* argv[] = {self.data(), filter.data(), nullptr};
    TuneHostAllocator(argv);
    // Not re-executed (DTM_HOST_ALLOCATOR=default): run the report under glibc's defaults.
    execv(self.c_str(), argv);
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  std::ifstream in(out);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(HostAllocatorTest, ReexecRunsUnderTheTunables) {
  EXPECT_EQ(RunChild(nullptr), std::string(kAll) + "\n1\n");
}

TEST(HostAllocatorTest, DefaultModeKeepsGlibcsArenas) {
  // Without the settings, threads that allocate at once get arenas of their own: the check above
  // can tell the difference.
  const std::string report = RunChild("default");
  ASSERT_EQ(report.substr(0, 1), "\n") << report;
  EXPECT_GT(std::stoi(report.substr(1)), 1) << report;
}

}  // namespace
}  // namespace dtm
