#include "common/jsonl.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef DTM_HAVE_ZLIB
#include <zlib.h>
#endif

#include "common/user_text.h"

namespace dtm {
namespace {

constexpr size_t kChunkBytes = 1 << 16;

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

Status OpenError(const std::string& path, int err) {
  if (err == ENOENT) return NotFoundError(path + ": no such file");
  return InternalError(path + ": cannot open: " + ErrnoText(err));
}

struct FileCloser {
  void operator()(FILE* f) const {
    if (f != nullptr) std::fclose(f);
  }
};
using FilePtr = std::unique_ptr<FILE, FileCloser>;

#ifndef DTM_HAVE_ZLIB
Status UnsupportedGzip(const std::string& path) {
  return UnimplementedError(path + ": gzip files need zlib, which this build of dtm lacks");
}
#endif

}  // namespace

bool IsGzipPath(std::string_view path) {
  constexpr std::string_view kSuffix = ".gz";
  return path.size() >= kSuffix.size() && path.substr(path.size() - kSuffix.size()) == kSuffix;
}

// ---------------------------------------------------------------------------------------------
// Sources: where a LineReader's bytes come from.

class LineReader::Source {
 public:
  virtual ~Source() = default;
  // Reads up to `capacity` bytes; *got == 0 with an OK status means the end of the data.
  virtual Status Read(char* out, size_t capacity, size_t* got) = 0;
};

namespace {

class PlainSource : public LineReader::Source {
 public:
  PlainSource(std::string path, FilePtr file) : path_(std::move(path)), file_(std::move(file)) {}

  Status Read(char* out, size_t capacity, size_t* got) override {
    *got = std::fread(out, 1, capacity, file_.get());
    if (*got == 0 && std::ferror(file_.get())) return InternalError(path_ + ": read failed: " + ErrnoText(errno));
    return OkStatus();
  }

 private:
  std::string path_;
  FilePtr file_;
};

#ifdef DTM_HAVE_ZLIB
// Inflates one or more concatenated gzip members (as `cat a.gz b.gz` makes). A stream that ends
// inside a member is truncated; bytes after a member that do not start another are corrupt.
class GzipSource : public LineReader::Source {
 public:
  GzipSource(std::string path, FilePtr file) : path_(std::move(path)), file_(std::move(file)), in_(kChunkBytes) {}
  ~GzipSource() override {
    if (initialized_) inflateEnd(&zs_);
  }

  Status Init() {
    std::memset(&zs_, 0, sizeof(zs_));
    // 16 + MAX_WBITS: gzip framing only, so a plain file misnamed ".gz" is an error, not read as-is.
    if (inflateInit2(&zs_, 16 + MAX_WBITS) != Z_OK) return InternalError(path_ + ": cannot initialise zlib");
    initialized_ = true;
    return OkStatus();
  }

  Status Read(char* out, size_t capacity, size_t* got) override {
    *got = 0;
    while (*got == 0) {
      if (zs_.avail_in == 0 && !eof_) RETURN_IF_ERROR(FillInput());
      if (member_done_) {
        if (zs_.avail_in == 0) {
          if (eof_) return OkStatus();
          continue;
        }
        inflateReset(&zs_);
        member_done_ = false;
      }
      if (zs_.avail_in == 0 && eof_) {
        if (compressed_bytes_ == 0) return DataLossError(path_ + ": empty file is not a gzip stream");
        return DataLossError(path_ + ": gzip stream is truncated (unexpected end of file)");
      }
      zs_.next_out = reinterpret_cast<Bytef*>(out);
      zs_.avail_out = static_cast<uInt>(capacity);
      int rc = inflate(&zs_, Z_NO_FLUSH);
      *got = capacity - zs_.avail_out;
      if (rc == Z_STREAM_END) {
        member_done_ = true;
      } else if (rc == Z_BUF_ERROR && zs_.avail_in == 0) {
        continue;  // needs more input
      } else if (rc != Z_OK) {
        std::string why = zs_.msg != nullptr ? zs_.msg : "zlib error " + std::to_string(rc);
        return DataLossError(path_ + ": corrupt gzip data: " + OneLine(why));
      }
    }
    return OkStatus();
  }

 private:
  Status FillInput() {
    size_t n = std::fread(in_.data(), 1, in_.size(), file_.get());
    if (n == 0 && std::ferror(file_.get())) return InternalError(path_ + ": read failed: " + ErrnoText(errno));
    if (n == 0) eof_ = true;
    compressed_bytes_ += n;
    zs_.next_in = reinterpret_cast<Bytef*>(in_.data());
    zs_.avail_in = static_cast<uInt>(n);
    return OkStatus();
  }

  std::string path_;
  FilePtr file_;
  std::vector<char> in_;
  z_stream zs_;
  bool initialized_ = false;
  bool eof_ = false;
  bool member_done_ = false;
  uint64_t compressed_bytes_ = 0;
};
#endif  // DTM_HAVE_ZLIB

// Opens `path` for reading. O_NONBLOCK keeps open() itself from waiting for a FIFO's writer; the
// descriptor is checked, then made blocking again for the reads.
StatusOr<FilePtr> OpenForReading(const std::string& path, const ReadLimits& limits) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return OpenError(path, errno);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || (limits.regular_file_only && !S_ISREG(st.st_mode))) {
    ::close(fd);
    return FailedPreconditionError(path + ": not a regular file");
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    const int err = errno;
    ::close(fd);
    return InternalError(path + ": cannot read: " + ErrnoText(err));
  }
  FilePtr file(::fdopen(fd, "rb"));
  if (file == nullptr) {
    const int err = errno;
    ::close(fd);
    return InternalError(path + ": cannot read: " + ErrnoText(err));
  }
  return file;
}

Status TooLarge(const std::string& path, uint64_t max_bytes) {
  return Status(StatusCode::kResourceExhausted,
                path + ": larger than the limit of " + std::to_string(max_bytes) + " bytes");
}

StatusOr<std::unique_ptr<LineReader::Source>> OpenSource(const std::string& path, const ReadLimits& limits) {
  if (IsGzipPath(path)) {
#ifndef DTM_HAVE_ZLIB
    return UnsupportedGzip(path);
#endif
  }
  ASSIGN_OR_RETURN(FilePtr file, OpenForReading(path, limits));
#ifdef DTM_HAVE_ZLIB
  if (IsGzipPath(path)) {
    auto source = std::make_unique<GzipSource>(path, std::move(file));
    RETURN_IF_ERROR(source->Init());
    return std::unique_ptr<LineReader::Source>(std::move(source));
  }
#endif
  return std::unique_ptr<LineReader::Source>(std::make_unique<PlainSource>(path, std::move(file)));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LineReader

LineReader::LineReader(std::string path, std::unique_ptr<Source> source, uint64_t max_bytes)
    : path_(std::move(path)), source_(std::move(source)), max_bytes_(max_bytes) {}

LineReader::~LineReader() = default;

StatusOr<std::unique_ptr<LineReader>> LineReader::Open(const std::string& path, const ReadLimits& limits) {
  ASSIGN_OR_RETURN(std::unique_ptr<Source> source, OpenSource(path, limits));
  return std::unique_ptr<LineReader>(new LineReader(path, std::move(source), limits.max_bytes));
}

bool LineReader::Next(std::string* line) {
  line->clear();
  if (!status_.ok()) return false;
  bool have_bytes = false;  // a last line without "\n" still counts
  while (true) {
    const char* begin = buffer_.data() + pos_;
    const size_t available = buffer_.size() - pos_;
    const char* newline = available > 0 ? static_cast<const char*>(std::memchr(begin, '\n', available)) : nullptr;
    if (newline != nullptr) {
      line->append(begin, newline);
      pos_ += static_cast<size_t>(newline - begin) + 1;
      break;
    }
    line->append(begin, available);
    have_bytes = have_bytes || available > 0;
    buffer_.clear();
    pos_ = 0;
    if (eof_) {
      if (!have_bytes) return false;
      break;
    }
    buffer_.resize(kChunkBytes);
    size_t got = 0;
    status_ = source_->Read(buffer_.data(), buffer_.size(), &got);
    buffer_.resize(got);
    bytes_read_ += got;
    if (status_.ok() && max_bytes_ > 0 && bytes_read_ > max_bytes_) status_ = TooLarge(path_, max_bytes_);
    if (!status_.ok()) {
      line->clear();
      return false;
    }
    if (got == 0) eof_ = true;
  }
  if (!line->empty() && line->back() == '\r') line->pop_back();
  ++line_number_;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Sinks: where a FileWriter's bytes go.

class FileWriter::Sink {
 public:
  virtual ~Sink() = default;
  virtual Status Write(const char* data, size_t n) = 0;
  // Writes whatever is buffered and closes the file, reporting any failure.
  virtual Status Finish() = 0;
};

namespace {

class PlainSink : public FileWriter::Sink {
 public:
  PlainSink(std::string tmp_path, FilePtr file) : tmp_path_(std::move(tmp_path)), file_(std::move(file)) {}

  Status Write(const char* data, size_t n) override {
    if (n > 0 && std::fwrite(data, 1, n, file_.get()) != n) {
      return InternalError(tmp_path_ + ": write failed: " + ErrnoText(errno));
    }
    return OkStatus();
  }

  Status Finish() override {
    // fsync before the rename, so that after a crash the name holds either the old or the new file.
    if (std::fflush(file_.get()) != 0 || ::fsync(fileno(file_.get())) != 0) {
      return InternalError(tmp_path_ + ": write failed: " + ErrnoText(errno));
    }
    if (std::fclose(file_.release()) != 0) return InternalError(tmp_path_ + ": close failed: " + ErrnoText(errno));
    return OkStatus();
  }

 private:
  std::string tmp_path_;
  FilePtr file_;
};

#ifdef DTM_HAVE_ZLIB
class GzipSink : public FileWriter::Sink {
 public:
  GzipSink(std::string tmp_path, FilePtr file)
      : tmp_path_(tmp_path), plain_(std::move(tmp_path), std::move(file)), out_(kChunkBytes) {}
  ~GzipSink() override {
    if (initialized_) deflateEnd(&zs_);
  }

  Status Init() {
    std::memset(&zs_, 0, sizeof(zs_));
    if (deflateInit2(&zs_, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
      return InternalError(tmp_path_ + ": cannot initialise zlib");
    }
    initialized_ = true;
    return OkStatus();
  }

  Status Write(const char* data, size_t n) override {
    // zlib counts in uInt; feed large inputs in pieces.
    while (n > 0) {
      size_t piece = std::min<size_t>(n, 1u << 30);
      RETURN_IF_ERROR(Deflate(data, piece, Z_NO_FLUSH));
      data += piece;
      n -= piece;
    }
    return OkStatus();
  }

  Status Finish() override {
    RETURN_IF_ERROR(Deflate(nullptr, 0, Z_FINISH));
    return plain_.Finish();
  }

 private:
  Status Deflate(const char* data, size_t n, int flush) {
    zs_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data));
    zs_.avail_in = static_cast<uInt>(n);
    while (true) {
      zs_.next_out = reinterpret_cast<Bytef*>(out_.data());
      zs_.avail_out = static_cast<uInt>(out_.size());
      int rc = deflate(&zs_, flush);
      if (rc == Z_STREAM_ERROR) return InternalError(tmp_path_ + ": zlib deflate failed");
      RETURN_IF_ERROR(plain_.Write(out_.data(), out_.size() - zs_.avail_out));
      if (flush == Z_FINISH ? rc == Z_STREAM_END : (zs_.avail_in == 0 && zs_.avail_out != 0)) return OkStatus();
    }
  }

  std::string tmp_path_;
  PlainSink plain_;
  std::vector<char> out_;
  z_stream zs_;
  bool initialized_ = false;
};
#endif  // DTM_HAVE_ZLIB

}  // namespace

// ---------------------------------------------------------------------------------------------
// FileWriter

FileWriter::FileWriter(std::string path, std::unique_ptr<Sink> sink) : path_(std::move(path)), sink_(std::move(sink)) {}

FileWriter::~FileWriter() {
  if (committed_) return;
  sink_.reset();
  std::remove((path_ + ".tmp").c_str());
}

StatusOr<std::unique_ptr<FileWriter>> FileWriter::Open(const std::string& path) {
  if (IsGzipPath(path)) {
#ifndef DTM_HAVE_ZLIB
    return UnsupportedGzip(path);
#endif
  }
  const std::string tmp_path = path + ".tmp";
  FilePtr file(std::fopen(tmp_path.c_str(), "wb"));
  if (file == nullptr) return OpenError(tmp_path, errno);
  std::unique_ptr<Sink> sink;
#ifdef DTM_HAVE_ZLIB
  if (IsGzipPath(path)) {
    auto gzip = std::make_unique<GzipSink>(tmp_path, std::move(file));
    Status init = gzip->Init();
    if (!init.ok()) {
      gzip.reset();
      std::remove(tmp_path.c_str());
      return init;
    }
    sink = std::move(gzip);
  }
#endif
  if (sink == nullptr) sink = std::make_unique<PlainSink>(tmp_path, std::move(file));
  return std::unique_ptr<FileWriter>(new FileWriter(path, std::move(sink)));
}

Status FileWriter::Write(std::string_view bytes) {
  if (closed_) return FailedPreconditionError(path_ + ": write after close");
  return sink_->Write(bytes.data(), bytes.size());
}

Status FileWriter::WriteLine(std::string_view line) {
  RETURN_IF_ERROR(Write(line));
  return Write("\n");
}

Status FileWriter::Close() {
  if (closed_) return FailedPreconditionError(path_ + ": closed twice");
  closed_ = true;  // even on failure: the sink is in no state to be finished again
  RETURN_IF_ERROR(sink_->Finish());
  const std::string tmp_path = path_ + ".tmp";
  if (std::rename(tmp_path.c_str(), path_.c_str()) != 0) {
    return InternalError(path_ + ": cannot rename " + tmp_path + " into place: " + ErrnoText(errno));
  }
  committed_ = true;
  return OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Whole files

StatusOr<std::string> ReadTextFile(const std::string& path, const ReadLimits& limits) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader::Source> source, OpenSource(path, limits));
  std::string text;
  try {
    std::vector<char> chunk(kChunkBytes);
    while (true) {
      size_t got = 0;
      RETURN_IF_ERROR(source->Read(chunk.data(), chunk.size(), &got));
      if (got == 0) break;
      text.append(chunk.data(), got);
      if (limits.max_bytes > 0 && text.size() > limits.max_bytes) return TooLarge(path, limits.max_bytes);
    }
  } catch (const std::exception& e) {
    return Status(StatusCode::kResourceExhausted, path + ": cannot hold the file in memory: " + OneLine(e.what()));
  }
  return text;
}

Status WriteTextFile(const std::string& path, std::string_view text) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> writer, FileWriter::Open(path));
  RETURN_IF_ERROR(writer->Write(text));
  return writer->Close();
}

bool JsonNestedDeeperThan(const nlohmann::json& value, int levels) {
  if (!value.is_structured()) return false;
  if (levels == 0) return true;
  for (const nlohmann::json& child : value) {
    if (JsonNestedDeeperThan(child, levels - 1)) return true;
  }
  return false;
}

StatusOr<nlohmann::json> ReadJsonFile(const std::string& path, const ReadLimits& limits) {
  ASSIGN_OR_RETURN(std::string text, ReadTextFile(path, limits));
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    return DataLossError(path + ": invalid JSON" + (limits.quote_content ? ": " + OneLine(e.what()) : ""));
  }
}

StatusOr<std::vector<nlohmann::json>> ReadJsonLines(const std::string& path, const ReadLimits& limits) {
  ASSIGN_OR_RETURN(std::unique_ptr<LineReader> reader, LineReader::Open(path, limits));
  std::vector<nlohmann::json> rows;
  std::string line;
  while (reader->Next(&line)) {
    if (line.find_first_not_of(" \t\r\f\v") == std::string::npos) continue;
    try {
      rows.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception& e) {
      return DataLossError(path + ":" + std::to_string(reader->line_number()) + ": invalid JSON" +
                           (limits.quote_content ? ": " + OneLine(e.what()) : ""));
    } catch (const std::bad_alloc&) {
      return Status(StatusCode::kResourceExhausted, path + ":" + std::to_string(reader->line_number()) +
                                                        ": out of memory parsing the line");
    }
  }
  RETURN_IF_ERROR(reader->status());
  return rows;
}

Status WriteJsonLines(const std::string& path, const std::vector<nlohmann::json>& rows) {
  ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> writer, FileWriter::Open(path));
  for (size_t i = 0; i < rows.size(); ++i) {
    std::string text;
    try {
      text = rows[i].dump();
    } catch (const nlohmann::json::exception& e) {
      return InvalidArgumentError(path + ": row " + std::to_string(i) + " cannot be written as JSON: " +
                                  OneLine(e.what()));
    }
    RETURN_IF_ERROR(writer->WriteLine(text));
  }
  return writer->Close();
}

}  // namespace dtm
