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

// `path` absolute and lexically normal, without a trailing slash.
std::string LexicalAbsolute(const std::string& path, std::error_code* ec) {
  std::string out = std::filesystem::absolute(path, *ec).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

bool DataRoot::Under(const std::string& path, const std::string& root) {
  return root == "/" || path == root ||
         (path.size() > root.size() && path.compare(0, root.size(), root) == 0 && path[root.size()] == '/');
}

Status DataRoot::Outside(const std::string& path) const {
  return Status(StatusCode::kPermissionDenied,
                Quoted(path) + " is outside the data root " + root_ + " (the daemon's --data-root)");
}

StatusOr<DataRoot> DataRoot::Create(const std::string& root) {
  if (root.empty()) return InvalidArgumentError("the data root is empty");
  if (root.find('\0') != std::string::npos) return InvalidArgumentError("the data root holds a NUL byte");
  std::error_code ec;
  std::string given = LexicalAbsolute(root, &ec);
  if (ec) return InvalidArgumentError("the data root " + Quoted(root) + " cannot be made absolute");
  ASSIGN_OR_RETURN(std::string canonical, Canonical(root));
  struct stat st {};
  if (::stat(canonical.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return InvalidArgumentError("the data root " + Quoted(root) + " is not a folder");
  }
  return DataRoot(std::move(given), std::move(canonical));
}

StatusOr<std::string> DataRoot::Resolve(const std::string& path) const {
  if (path.empty()) return InvalidArgumentError("the path is empty");
  // The system reads a path up to its first NUL; the checks below would read all of it.
  if (path.find('\0') != std::string::npos) return Outside(path);
  // Lexically first, so that nothing outside the root is looked at (not even whether it exists);
  // then resolved, so that a symlink under the root cannot lead out of it.
  std::error_code ec;
  const std::string lexical = LexicalAbsolute(path, &ec);
  if (ec || !(Under(lexical, given_) || Under(lexical, root_))) return Outside(path);
  ASSIGN_OR_RETURN(std::string canonical, Canonical(path));
  if (!Under(canonical, root_)) return Outside(path);
  return canonical;
}

}  // namespace dtm
