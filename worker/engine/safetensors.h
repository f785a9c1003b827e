// The safetensors file format: read (memory-mapped, header fully validated) and write.
//
// Layout: an 8-byte little-endian u64 N, N bytes of JSON header
//   {"NAME": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value"}}
// then the data section; offsets are relative to its start.
//
// Errors (one line, naming the file): NOT_FOUND for a missing file or tensor, DATA_LOSS for any
// malformed or truncated content, INVALID_ARGUMENT for tensors that cannot be written.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "common/status.h"

namespace dtm {

enum class SafetensorsDType { kF32, kF16, kBF16, kF64, kI64, kI32, kI16, kI8, kU8, kBool };

// "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL".
std::string_view SafetensorsDTypeName(SafetensorsDType dtype);
size_t SafetensorsDTypeSize(SafetensorsDType dtype);
torch::ScalarType ToScalarType(SafetensorsDType dtype);

struct SafetensorsTensorInfo {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte range in the data section
  uint64_t end = 0;

  uint64_t num_bytes() const { return end - begin; }
};

// A read-only memory mapping of one safetensors file. Every check happens in Open(), before any
// tensor byte is touched, so that later accesses stay in bounds. Thread-safe after Open (const).
class SafetensorsFile {
 public:
  // Header lengths above this are refused as corrupt: real headers are a few hundred KB.
  static constexpr uint64_t kMaxHeaderBytes = 100'000'000;

  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<SafetensorsTensorInfo>& tensors() const { return tensors_; }  // in header order
  const SafetensorsTensorInfo* Find(const std::string& name) const;  // nullptr if absent
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  // A CPU tensor holding a copy of the tensor's bytes in its stored dtype.
  StatusOr<torch::Tensor> Load(const std::string& name) const;
  // A fresh tensor of `dtype` on `device` (never an alias of the mapping), converted without an
  // intermediate CPU copy in the stored dtype where the data is aligned.
  StatusOr<torch::Tensor> LoadAs(const std::string& name, torch::ScalarType dtype, const torch::Device& device) const;
  // The tensor's bytes, a view into the mapping valid while this object lives. `info` must come
  // from tensors() or Find(); anything else gives an empty view.
  std::string_view RawBytes(const SafetensorsTensorInfo& info) const;

  class Mapping;  // the RAII mmap; defined in safetensors.cc

 private:
  SafetensorsFile(std::string path, std::unique_ptr<Mapping> mapping);
  Status ParseHeader();

  std::string path_;
  std::unique_ptr<Mapping> mapping_;
  uint64_t data_start_ = 0;  // 8 + header length
  uint64_t data_size_ = 0;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::unordered_map<std::string, size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` in the given order (moved to CPU, made contiguous), with the header padded with
// spaces to a multiple of 8 bytes as the reference writer does. Atomic: written to path + ".tmp"
// and renamed. Supported dtypes: those of SafetensorsDType.
Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace dtm
