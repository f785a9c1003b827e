// `re:` targets of a compressed-tensors quantization_config (worker/engine/module_pattern.h): the
// pattern is the input up to its first newline, the name the rest. A pattern compiles or is refused
// with a one-line message; matching ends in pattern x name steps (libFuzzer's timeout catches a
// regression to backtracking); and three identities hold for whatever compiles: a group changes
// nothing, an alternative with a pattern that matches everything matches, and `.*` after the pattern
// matches exactly where the pattern does (re.match needs only a prefix).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "worker/engine/module_pattern.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t newline = input.find('\n');
  const std::string pattern = input.substr(0, newline);
  const std::string name = newline == std::string::npos ? "model.layers.0.mlp.down_proj" : input.substr(newline + 1);
  dtm::StatusOr<dtm::ModulePattern> p = dtm::ModulePattern::Compile(pattern);
  if (!p.ok()) {
    const std::string& m = p.status().message();
    if (m.empty()) std::abort();
    const dtm::StatusCode code = p.status().code();
    if (code != dtm::StatusCode::kInvalidArgument && code != dtm::StatusCode::kUnimplemented) std::abort();
    return 0;
  }
  const bool matches = p->Matches(name);
  if (pattern.size() + 4 <= dtm::ModulePattern::kMaxPatternLength && pattern.rfind('^', 0) != 0) {
    dtm::StatusOr<dtm::ModulePattern> grouped = dtm::ModulePattern::Compile("(?:" + pattern + ")");
    if (!grouped.ok() || grouped->Matches(name) != matches) std::abort();
    dtm::StatusOr<dtm::ModulePattern> either = dtm::ModulePattern::Compile(pattern + "|.*");
    if (!either.ok() || !either->Matches(name)) std::abort();
    dtm::StatusOr<dtm::ModulePattern> prefix = dtm::ModulePattern::Compile("(?:" + pattern + ").*");
    if (!prefix.ok() || prefix->Matches(name) != matches) std::abort();
  }
  return 0;
}
