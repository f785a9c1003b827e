#include "worker/engine/perplexity_windows.h"

#include "worker/engine/tokenizer.h"

namespace dtm {
namespace {

// Python's str.isspace set (Python 3.11: general category Zs, or bidirectional class WS, B or S).
bool IsPythonSpace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Whether `line` holds only str.isspace characters. A byte sequence that is not well-formed UTF-8
// stops the scan as text.
bool OnlyWhitespace(std::string_view line) {
  size_t i = 0;
  while (i < line.size()) {
    const auto b0 = static_cast<unsigned char>(line[i]);
    uint32_t c = 0;
    size_t len = 0;
    if (b0 < 0x80) {
      c = b0, len = 1;
    } else if ((b0 & 0xE0) == 0xC0) {
      c = b0 & 0x1F, len = 2;
    } else if ((b0 & 0xF0) == 0xE0) {
      c = b0 & 0x0F, len = 3;
    } else {
      return false;  // 4-byte characters hold no whitespace; anything else is not UTF-8
    }
    if (i + len > line.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(line[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      c = (c << 6) | (b & 0x3F);
    }
    if ((len == 2 && c < 0x80) || (len == 3 && c < 0x800)) return false;  // overlong: not UTF-8
    if (!IsPythonSpace(c)) return false;
    i += len;
  }
  return true;
}

}  // namespace

std::string JoinLinesAsRows(std::string_view file_text) {
  std::string out;
  out.reserve(file_text.size() + file_text.size() / 8);
  bool first = true;
  size_t start = 0;
  while (start < file_text.size()) {
    // The line runs to its break: "\n", "\r\n" or "\r", all read as one "\n".
    size_t end = file_text.find_first_of("\r\n", start);
    std::string_view line = file_text.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start);
    bool has_break = end != std::string_view::npos;
    size_t next = file_text.size();
    if (has_break) next = end + ((file_text[end] == '\r' && end + 1 < file_text.size() && file_text[end + 1] == '\n') ? 2 : 1);
    if (!first) out += "\n\n";
    first = false;
    // row.strip() sees the line with its "\n", which is whitespace itself.
    if (!OnlyWhitespace(line)) {
      out.append(line);
      if (has_break) out += '\n';
    }
    start = next;
  }
  return out;
}

StatusOr<ProbeSet> CutPerplexityWindows(const std::vector<int32_t>& tokens, int64_t window, const std::string& source) {
  if (window < 2) {
    return InvalidArgumentError("window of " + std::to_string(window) +
                                " tokens: a window must hold at least 2 tokens (its first is not scored)");
  }
  const auto total = static_cast<int64_t>(tokens.size());
  if (total < window) {
    return InvalidArgumentError(source + ": " + std::to_string(total) + " tokens (BOS included), fewer than one window of " +
                                std::to_string(window) + " tokens");
  }
  ProbeSet set;
  for (int64_t start = 0; start + window <= total; start += window) {
    set.probes.push_back({source + ":" + std::to_string(start),
                          std::vector<int32_t>(tokens.begin() + start, tokens.begin() + start + window)});
  }
  return set;
}

StatusOr<PerplexityWindows> PerplexityWindowsFromText(std::string_view text, const Tokenizer& tokenizer,
                                                      int64_t window, const std::string& source) {
  const std::vector<int32_t> tokens = tokenizer.Encode(text, /*add_bos=*/true);
  PerplexityWindows out;
  ASSIGN_OR_RETURN(out.windows, CutPerplexityWindows(tokens, window, source));
  out.text_tokens = static_cast<int64_t>(tokens.size());
  out.dropped_tokens = out.text_tokens % window;
  return out;
}

}  // namespace dtm
