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

// Whether the valid sequence of `n` bytes at text[i] is a control character: C0, DEL, or C1
// (U+0080..U+009F, two bytes C2 80..C2 9F; U+009B is a one-byte terminal escape in some terminals).
bool IsControl(std::string_view text, size_t i, size_t n) {
  const auto b0 = static_cast<uint8_t>(text[i]);
  if (n == 1) return b0 < 0x20 || b0 == 0x7F;
  return n == 2 && b0 == 0xC2 && static_cast<uint8_t>(text[i + 1]) <= 0x9F;
}

}  // namespace

std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return text;
}

size_t InvalidUtf8Offset(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const size_t n = SequenceLength(text, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

std::string Bounded(std::string_view text, size_t max_bytes) {
  // Cut text ends in the suffix, which the bound includes.
  const std::string suffix = "... (" + std::to_string(text.size()) + " bytes)";
  const size_t budget =
      text.size() <= max_bytes ? max_bytes : (max_bytes > suffix.size() ? max_bytes - suffix.size() : 0);
  std::string out;
  out.reserve(std::min(text.size(), max_bytes));
  size_t i = 0;
  while (i < text.size()) {
    const size_t n = SequenceLength(text, i);
    const size_t width = n == 0 ? 1 : n;
    // A replaced character takes one byte; a kept one its own.
    const bool replaced = n == 0 || IsControl(text, i, n);
    if (out.size() + (replaced ? 1 : n) > budget) break;
    if (replaced) {
      out += '?';
    } else {
      out.append(text.substr(i, n));
    }
    i += width;
  }
  if (i < text.size()) out += suffix;
  return out;
}

std::string Quoted(std::string_view text, size_t max_bytes) { return "'" + Bounded(text, max_bytes) + "'"; }

}  // namespace dtm
