// The `re:` targets of a compressed-tensors quantization_config (compressed_tensors.h): a regular
// expression matched as Python's re.match does, from the start of a module name, needing not reach its
// end.
//
// config.json is untrusted input, and a backtracking engine (std::regex, Python's re) takes
// exponential time on patterns such as `(.*)*x`, so a worker opening a hostile checkpoint would hang.
// This is a Thompson automaton simulated over sets of states: time O(pattern x name) whatever the
// pattern. It reads the syntax quantization configs use: literals, `\` escapes (`\.`, `\d`, `\w`,
// `\s` and their capitals), `.`, classes `[a-z_]` and `[^...]` (escapes inside them too), groups
// `(...)` and `(?:...)`, `|`, `*` `+` `?` (and their lazy forms, the same for matching), `^` at the
// start and `$`. Anything else (counted repetition `{m,n}`, lookaround, backreferences, named groups)
// is refused with the position named rather than read differently from Python.
#pragma once

#include <bitset>
#include <cstddef>
#include <string>
#include <vector>

#include "common/status.h"

namespace dtm {

class ModulePattern {
 public:
  // Patterns longer than this are refused: real ones are a few dozen characters.
  static constexpr size_t kMaxPatternLength = 1000;

  // INVALID_ARGUMENT (malformed) or UNIMPLEMENTED (syntax outside the subset), naming the position.
  static StatusOr<ModulePattern> Compile(const std::string& pattern);

  // Python's re.match(pattern, name) is not None.
  bool Matches(const std::string& name) const;

 private:
  // kChar consumes one byte of `chars`; kSplit, kJump and kEnd (which passes only at the name's end)
  // consume nothing; kMatch accepts.
  enum class Op { kChar, kSplit, kJump, kEnd, kMatch };
  struct State {
    Op op = Op::kMatch;
    std::bitset<256> chars;  // kChar: the bytes it consumes
    int next = -1;           // kChar, kJump, kEnd: the following state; kSplit: its first branch
    int alt = -1;            // kSplit: the second branch
  };
  class Parser;
  friend class Parser;

  // The states reachable from `s` without consuming a byte, added to `set` (with `at_end`: whether
  // `$` may pass).
  void AddState(int s, bool at_end, std::vector<int>& set, std::vector<char>& on) const;

  std::vector<State> states_;
  int start_ = 0;
};

}  // namespace dtm
