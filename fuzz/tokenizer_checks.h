// What both tokenizer fuzzers do with a tokenizer that loaded: encode texts that reach every branch
// of the encoders (spaces, runs of spaces, multi-byte characters, a character no vocabulary holds,
// invalid UTF-8, text that looks like special and byte pieces) and decode the ids, checking the
// promises of worker/engine/tokenizer.h.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "worker/engine/tokenizer.h"

namespace dtm::fuzz {

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF).
inline bool IsValidUtf8(std::string_view text) {
  for (size_t i = 0; i < text.size();) {
    const auto b0 = static_cast<uint8_t>(text[i]);
    size_t length = 0;
    uint32_t code = 0;
    uint32_t min_code = 0;
    if (b0 < 0x80) {
      ++i;
      continue;
    } else if ((b0 & 0xE0) == 0xC0) {
      length = 2, code = b0 & 0x1F, min_code = 0x80;
    } else if ((b0 & 0xF0) == 0xE0) {
      length = 3, code = b0 & 0x0F, min_code = 0x800;
    } else if ((b0 & 0xF8) == 0xF0) {
      length = 4, code = b0 & 0x07, min_code = 0x10000;
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      const auto b = static_cast<uint8_t>(text[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      code = (code << 6) | (b & 0x3F);
    }
    if (code < min_code || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    i += length;
  }
  return true;
}

inline void CheckTokenizer(const Tokenizer& tokenizer, std::string_view extra_text) {
  static const char* const kTexts[] = {
      "",
      "Hello world",
      "  the  quick brown fox\tjumps\n\nover 1234 ",
      "na\xC3\xAFve caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x99\x82 \xE4\xB8\xAD\xE6\x96\x87",
      "<s> </s> <unk> <0x41> \xE2\x96\x81\xE2\x96\x81",
      "bad \xFF\xC3 utf8 \xED\xA0\x80 \xC0\xAF end",
  };
  std::vector<std::string_view> texts(std::begin(kTexts), std::end(kTexts));
  texts.push_back(extra_text);
  for (std::string_view text : texts) {
    for (bool add_bos : {false, true}) {
      const std::vector<int32_t> ids = tokenizer.Encode(text, add_bos);
      for (int32_t id : ids) {
        if (id < 0 || id >= tokenizer.vocab_size()) std::abort();
      }
      // "Decode never returns invalid UTF-8" (tokenizer.h).
      if (!IsValidUtf8(tokenizer.Decode(ids))) std::abort();
    }
  }
  // Ids out of range are skipped, whatever they are.
  if (!IsValidUtf8(tokenizer.Decode({-1, 0, 1, 2, 3, static_cast<int32_t>(tokenizer.vocab_size()), 1 << 30}))) {
    std::abort();
  }
}

}  // namespace dtm::fuzz
