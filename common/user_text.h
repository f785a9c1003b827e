// How text that a user or a peer supplied enters dtm's own messages: bounded, printable and valid
// UTF-8. Error messages travel as gRPC status messages (HTTP/2 trailers, 8 KiB by default) and
// protobuf `string` fields (which must be valid UTF-8, or serialization fails), and are printed on
// terminals; a spec field of 100 kB or a file's bytes must never reach any of them unbounded.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dtm {

// Bytes of user text quoted in an error message by default.
inline constexpr size_t kQuotedTextBytes = 120;

// `text` with its line breaks ('\n', '\r') as spaces: a parser's message (nlohmann-json's, say) quoted
// in a one-line error.
std::string OneLine(std::string text);

// `text` made safe to quote: invalid UTF-8 and control characters (C0, DEL and C1, newlines
// included) become '?', and text longer than `max_bytes` is cut at a character boundary and followed
// by "... (N bytes)", N being the original length, so that the whole stays within `max_bytes` (which
// should leave room for that suffix: at least 32).
std::string Bounded(std::string_view text, size_t max_bytes = kQuotedTextBytes);

// Bounded(text) in single quotes: for names, paths and values quoted in an error.
std::string Quoted(std::string_view text, size_t max_bytes = kQuotedTextBytes);

// The byte offset of the first byte that does not start or continue a valid UTF-8 sequence
// (overlong forms, surrogates and code points past U+10FFFF included), or npos when all of `text`
// is valid UTF-8.
size_t InvalidUtf8Offset(std::string_view text);

}  // namespace dtm
