// Text and JSON-lines files, gzipped when the name ends in ".gz".
//
// Probe files, baseline files and C4-style corpora go through here. Readers stream, so a corpus
// larger than memory can be scanned; writers write `path + ".tmp"` and rename it over `path` on
// success, so a reader never sees a half-written file.
//
// Errors (one line, naming the file): NOT_FOUND for a missing file, DATA_LOSS for a truncated or
// corrupt gzip stream or a line that is not JSON, UNIMPLEMENTED for a ".gz" file in a build without
// zlib, RESOURCE_EXHAUSTED and FAILED_PRECONDITION for what ReadLimits refuses, INTERNAL for other
// I/O failures.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace dtm {

// True when `path` names a gzip file (ends in ".gz").
bool IsGzipPath(std::string_view path);

// How much a reader trusts a file. The defaults suit the user's own files on the command line; the
// coordinator reads paths named in job specs that anyone with the client API may submit, so it
// bounds what it reads and what its errors say (its `--data-root` decides which paths; data_root.h).
struct ReadLimits {
  // Bytes of content (after gunzip) read at most; a larger file fails with RESOURCE_EXHAUSTED
  // naming the limit, having held no more than about this much in memory. 0: no limit.
  uint64_t max_bytes = 0;
  // Refuse anything but a regular file with FAILED_PRECONDITION: a FIFO would block the reader,
  // /dev/zero would never end. Checked on the opened descriptor, so a swap after a check cannot fool it.
  bool regular_file_only = false;
  // Whether an error may quote the file's content (a JSON parser's "last read: ..." text). Off when
  // the caller may not be allowed to see the file (it could be /proc/self/environ).
  bool quote_content = true;
};

// Reads a text file line by line. Lines have no length limit. Not thread-safe.
class LineReader {
 public:
  static StatusOr<std::unique_ptr<LineReader>> Open(const std::string& path, const ReadLimits& limits = {});
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Stores the next line, without its "\n" (or "\r\n"), in `line`. Returns false at the end of the
  // file or on a read error; status() tells which. A last line without "\n" is returned too.
  bool Next(std::string* line);
  const Status& status() const { return status_; }
  // 1-based number of the last line returned by Next().
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

  class Source;  // plain or gzip bytes; defined in jsonl.cc

 private:
  LineReader(std::string path, std::unique_ptr<Source> source, uint64_t max_bytes);

  std::string path_;
  std::unique_ptr<Source> source_;
  uint64_t max_bytes_ = 0;   // ReadLimits::max_bytes
  uint64_t bytes_read_ = 0;  // from source_, after gunzip
  std::vector<char> buffer_;
  size_t pos_ = 0;  // next unread byte of buffer_
  bool eof_ = false;
  Status status_;
  int64_t line_number_ = 0;
};

// Writes a file atomically, gzipped when its name ends in ".gz": bytes go to `path + ".tmp"`, which
// Close() renames to `path`. Destroying the writer without a successful Close() removes the
// temporary file. Used for binary files (safetensors) too. Not thread-safe.
class FileWriter {
 public:
  static StatusOr<std::unique_ptr<FileWriter>> Open(const std::string& path);
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  Status Write(std::string_view bytes);
  // Writes `line` followed by "\n".
  Status WriteLine(std::string_view line);
  // Flushes, syncs and renames the file into place. Nothing may be written afterwards.
  Status Close();

  class Sink;  // plain or gzip bytes; defined in jsonl.cc

 private:
  FileWriter(std::string path, std::unique_ptr<Sink> sink);

  std::string path_;
  std::unique_ptr<Sink> sink_;
  bool closed_ = false;
  bool committed_ = false;  // renamed into place
};

// The whole file, gunzipped if its name ends in ".gz".
StatusOr<std::string> ReadTextFile(const std::string& path, const ReadLimits& limits = {});
// Replaces the file's content with `text`, gzipped if its name ends in ".gz".
Status WriteTextFile(const std::string& path, std::string_view text);

// Real JSON files of dtm's formats nest a few levels; a hostile one nests thousands deep, and
// nlohmann's copies, dumps and destructors recurse once per level: readers that copy or dump what
// they parsed refuse anything deeper than this first.
inline constexpr int kMaxJsonNesting = 64;

// Whether `value` nests deeper than `levels` (scalars are level 0); recurses at most `levels` deep.
bool JsonNestedDeeperThan(const nlohmann::json& value, int levels);

// A whole file holding one JSON value (config.json, an index.json), gunzipped if ".gz".
StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, const ReadLimits& limits = {});

// One JSON value per non-blank line. An error names "path:line".
StatusOr<std::vector<nlohmann::json>> ReadJsonLines(const std::string& path, const ReadLimits& limits = {});
// One compact JSON value per line.
Status WriteJsonLines(const std::string& path, const std::vector<nlohmann::json>& rows);

}  // namespace dtm
