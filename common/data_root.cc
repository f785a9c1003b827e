#include "common/data_root.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "common/user_text.h"

namespace dtm {
namespace {

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

// realpath(3): absolute, with every symlink and "." / ".." resolved; errno on failure.
StatusOr<std::string> Canonical(const std::string& path) {
  std::unique_ptr<char, FreeDeleter> resolved(::realpath(path.c_str(), nullptr));
  if (resolved == nullptr) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) return NotFoundError(Quoted(path) + ": no such file or folder");
    return Status(StatusCode::kPermissionDenied,
                  Quoted(path) + ": cannot be resolved: " + std::strerror(err));
  }
  return std::string(resolved.get());
}

}  // namespace

bool DataRoot::Under(const std::string& path) const {
  return root_ == "/" || path == root_ ||
         (path.size() > root_.size() && path.compare(0, root_.size(), root_) == 0 &&
          path[root_.size()] == '/');
}

Status DataRoot::Outside(const std::string& path) const {
  return Status(StatusCode::kPermissionDenied,
                Quoted(path) + " is outside the data root " + root_ + " (the daemon's --data-root)");
}

StatusOr<DataRoot> DataRoot::Create(const std::string& root) {
  if (root.empty()) return InvalidArgumentError("the data root is empty");
  ASSIGN_OR_RETURN(std::string canonical, Canonical(root));
  struct stat st {};
  if (::stat(canonical.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return InvalidArgumentError("the data root " + Quoted(root) + " is not a folder");
  }
  return DataRoot(std::move(canonical));
}

StatusOr<std::string> DataRoot::Resolve(const std::string& path) const {
  if (path.empty()) return InvalidArgumentError("the path is empty");
  // Lexically first, so that nothing outside the root is looked at (not even whether it exists);
  // then resolved, so that a symlink under the root cannot lead out of it.
  std::error_code ec;
  const std::filesystem::path absolute = std::filesystem::absolute(path, ec).lexically_normal();
  std::string lexical = absolute.string();
  while (lexical.size() > 1 && lexical.back() == '/') lexical.pop_back();
  if (ec || !Under(lexical)) return Outside(path);
  ASSIGN_OR_RETURN(std::string canonical, Canonical(path));
  if (!Under(canonical)) return Outside(path);
  return canonical;
}

}  // namespace dtm
