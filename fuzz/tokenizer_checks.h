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

#include "common/user_text.h"
#include "worker/engine/tokenizer.h"

namespace dtm::fuzz {

// True when `text` is well-formed UTF-8 (no overlong forms, surrogates or values past U+10FFFF):
// common/user_text's check, which shares no code with the tokenizer's own decoder.
inline bool IsValidUtf8(std::string_view text) { return InvalidUtf8Offset(text) == std::string_view::npos; }

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
