// A file holding the current fuzz input, for parsers that read only from a path.
//
// One file per process and suffix, so that `-jobs`/`-fork` workers never share one, on /dev/shm when
// there is one so that an execution costs no disk I/O. The suffix matters to the readers: ".gz"
// selects the gzip path of common/jsonl.h.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace dtm::fuzz {

class TempInputFile {
 public:
  explicit TempInputFile(const std::string& suffix) {
    const char* dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : std::getenv("TMPDIR");
    path_ = std::string(dir != nullptr ? dir : "/tmp") + "/dtm_fuzz_" + std::to_string(getpid()) + suffix;
  }
  ~TempInputFile() { std::remove(path_.c_str()); }
  TempInputFile(const TempInputFile&) = delete;
  TempInputFile& operator=(const TempInputFile&) = delete;

  // Replaces the file's content with `data`; returns its path. A failed write aborts: the run would
  // otherwise fuzz whatever the file held before.
  const std::string& Write(const uint8_t* data, size_t size) {
    FILE* f = std::fopen(path_.c_str(), "wb");
    if (f == nullptr || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
      std::perror(path_.c_str());
      std::abort();
    }
    return path_;
  }

  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace dtm::fuzz
