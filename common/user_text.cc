#include "common/user_text.h"

#include <algorithm>
#include <cstdint>

namespace dtm {
namespace {

// The length of the valid UTF-8 sequence at text[i], or 0 when none starts there (RFC 3629:
// shortest forms only, no surrogates, nothing past U+10FFFF).
size_t SequenceLength(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t n;
  uint8_t lo = 0x80, hi = 0xBF;  // the range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  if (byte(i + 1) < lo || byte(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

size_t InvalidUtf8Offset(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = SequenceLength(text, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string Bounded(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 24);
  size_t i = 0;
  while (i < text.size()) {
    size_t n = SequenceLength(text, i);
    const size_t width = n == 0 ? 1 : n;
    if (out.size() + width > max_bytes) break;
    const auto b0 = static_cast<uint8_t>(text[i]);
    if (n == 0 || (n == 1 && (b0 < 0x20 || b0 == 0x7F))) {
      out += '?';
    } else {
      out.append(text.substr(i, n));
    }
    i += width;
  }
  if (i < text.size()) out += "... (" + std::to_string(text.size()) + " bytes)";
  return out;
}

std::string Quoted(std::string_view text, size_t max_bytes) { return "'" + Bounded(text, max_bytes) + "'"; }

}  // namespace dtm
