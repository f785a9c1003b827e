// DataRoot: the folder under which a daemon reads the files that requests name. A job spec names
// its probe file (and a sparsify round its previous round's results) by path, and anyone allowed to
// submit jobs could otherwise make the coordinator read any file it can: /proc/self/environ, a
// FIFO that blocks it, /dev/zero that never ends.
#pragma once

#include <string>

#include "common/status.h"

namespace dtm {

class DataRoot {
 public:
  // `root` as an absolute, canonical folder (symlinks resolved). "/" admits every path. NOT_FOUND
  // when it does not exist, INVALID_ARGUMENT when it is not a folder.
  static StatusOr<DataRoot> Create(const std::string& root);

  // The canonical path of `path` (relative paths against the working directory, symlinks resolved)
  // when it lies under the root. NOT_FOUND for a path under the root that does not exist,
  // PERMISSION_DENIED for one outside the root (or holding a NUL byte, which would make the check
  // and the lookup read different paths); messages quote `path` bounded (common/user_text.h) and
  // name the root. A root given through a symlink admits paths under either spelling. Whether
  // the file is a regular file is the reader's check (ReadLimits::regular_file_only), made on the
  // opened descriptor.
  StatusOr<std::string> Resolve(const std::string& path) const;

  // Resolve's answer without the error: whether `path` exists under the root.
  bool Contains(const std::string& path) const { return Resolve(path).ok(); }

  const std::string& path() const { return root_; }

 private:
  DataRoot(std::string given, std::string root) : given_(std::move(given)), root_(std::move(root)) {}
  // Whether the absolute, normal `path` is `root` or below it.
  static bool Under(const std::string& path, const std::string& root);
  Status Outside(const std::string& path) const;

  std::string given_;  // absolute and lexically normal, as the daemon was given it
  std::string root_;   // canonical (symlinks resolved); no trailing slash except for "/"
};

}  // namespace dtm
