// The XDG base directories (specifications.freedesktop.org/basedir-spec): where dtm keeps what
// outlives a process for one user, `dtmctl local`'s store and `dtmctl compare`'s baseline cache.
#pragma once

#include <optional>
#include <string>

namespace dtm {

// `$variable` when it is an absolute path (the spec ignores a relative one), else $HOME followed by
// `under_home` (e.g. XdgDir("XDG_DATA_HOME", "/.local/share")); nullopt when neither is set.
std::optional<std::string> XdgDir(const char* variable, const char* under_home);

}  // namespace dtm
