#include "worker/engine/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <set>
#include <system_error>
#include <tuple>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/jsonl.h"
#include "common/user_text.h"
#include "worker/engine/tensor_util.h"

namespace dtm {

// The format is little-endian; mapped bytes are used in place.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors.cc assumes a little-endian host");

namespace {

using OrderedJson = nlohmann::ordered_json;

// A valid header nests three levels (the header object, a tensor's entry, its shape list); values
// nested deeper than common/jsonl.h's bound are refused as they are parsed. The bound is far above
// three so that a slightly wrong header (a shape [[2]]) still gets the message that names its error.
constexpr int kMaxHeaderDepth = kMaxJsonNesting;

struct DTypeEntry {
  SafetensorsDType dtype;
  std::string_view name;
  size_t size;
  torch::ScalarType scalar_type;
};

constexpr DTypeEntry kDTypes[] = {
    {SafetensorsDType::kF32, "F32", 4, torch::kFloat32},   {SafetensorsDType::kF16, "F16", 2, torch::kFloat16},
    {SafetensorsDType::kBF16, "BF16", 2, torch::kBFloat16}, {SafetensorsDType::kF64, "F64", 8, torch::kFloat64},
    {SafetensorsDType::kI64, "I64", 8, torch::kInt64},     {SafetensorsDType::kI32, "I32", 4, torch::kInt32},
    {SafetensorsDType::kI16, "I16", 2, torch::kInt16},     {SafetensorsDType::kI8, "I8", 1, torch::kInt8},
    {SafetensorsDType::kU8, "U8", 1, torch::kUInt8},       {SafetensorsDType::kBool, "BOOL", 1, torch::kBool},
};

const DTypeEntry& EntryOf(SafetensorsDType dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.dtype == dtype) return e;
  }
  return kDTypes[0];  // unreachable: the table covers the enum
}

std::optional<SafetensorsDType> DTypeFromName(std::string_view name) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.name == name) return e.dtype;
  }
  return std::nullopt;
}

std::optional<SafetensorsDType> DTypeFromScalarType(torch::ScalarType type) {
  for (const DTypeEntry& e : kDTypes) {
    if (e.scalar_type == type) return e.dtype;
  }
  return std::nullopt;
}

std::string ErrnoText(int err) { return std::error_code(err, std::generic_category()).message(); }

// A non-negative JSON integer. nlohmann parses non-negative literals as unsigned, negative ones as
// signed and anything with a fraction or exponent as float, which is refused.
bool AsUint64(const OrderedJson& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

std::string ExceptionText(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e)) return OneLine(c10_error->what_without_backtrace());
  return OneLine(e.what());
}

// Failures past validation are allocation (host or device) or device errors.
Status LoadError(const std::string& path, const std::string& name, const std::exception& e) {
  const StatusCode code =
      dynamic_cast<const std::bad_alloc*>(&e) != nullptr ? StatusCode::kResourceExhausted : StatusCode::kInternal;
  return Status(code, OneLine(path + ": cannot load tensor '" + name + "': " + ExceptionText(e)));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

}  // namespace

std::string_view SafetensorsDTypeName(SafetensorsDType dtype) { return EntryOf(dtype).name; }
size_t SafetensorsDTypeSize(SafetensorsDType dtype) { return EntryOf(dtype).size; }
torch::ScalarType ToScalarType(SafetensorsDType dtype) { return EntryOf(dtype).scalar_type; }

// ---------------------------------------------------------------------------------------------
// Mapping: a read-only private mapping of a whole file. The descriptor is closed once mapped.

class SafetensorsFile::Mapping {
 public:
  static StatusOr<std::unique_ptr<Mapping>> Open(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) {
      int err = errno;
      if (err == ENOENT) return NotFoundError(path + ": no such file");
      return InternalError(path + ": cannot open: " + ErrnoText(err));
    }
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return InternalError(path + ": cannot stat: " + ErrnoText(errno));
    if (!S_ISREG(st.st_mode)) return InvalidArgumentError(path + ": not a regular file");
    auto mapping = std::unique_ptr<Mapping>(new Mapping());
    mapping->size_ = static_cast<uint64_t>(st.st_size);
    if (mapping->size_ == 0) return mapping;  // mmap refuses empty ranges; the size check reports it
    void* data = ::mmap(nullptr, mapping->size_, PROT_READ, MAP_PRIVATE, fd.get(), 0);
    if (data == MAP_FAILED) return InternalError(path + ": cannot mmap: " + ErrnoText(errno));
    mapping->data_ = static_cast<const uint8_t*>(data);
    return mapping;
  }

  ~Mapping() {
    if (data_ != nullptr) ::munmap(const_cast<uint8_t*>(data_), size_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }

 private:
  Mapping() = default;

  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// ---------------------------------------------------------------------------------------------
// SafetensorsFile

SafetensorsFile::SafetensorsFile(std::string path, std::unique_ptr<Mapping> mapping)
    : path_(std::move(path)), mapping_(std::move(mapping)) {}

SafetensorsFile::~SafetensorsFile() = default;

StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<Mapping> mapping, Mapping::Open(path));
  std::unique_ptr<SafetensorsFile> file(new SafetensorsFile(path, std::move(mapping)));
  try {
    RETURN_IF_ERROR(file->ParseHeader());
  } catch (const std::exception& e) {
    // Every access above is checked; this is for allocation failures on absurd headers.
    return DataLossError(path + ": cannot read the header: " + ExceptionText(e));
  }
  return file;
}

Status SafetensorsFile::ParseHeader() {
  auto corrupt = [this](const std::string& what) { return DataLossError(OneLine(path_ + ": " + what)); };
  const uint64_t file_size = mapping_->size();
  if (file_size < 8) {
    return corrupt("file of " + std::to_string(file_size) + " bytes is too short for a safetensors header");
  }
  uint64_t header_size = 0;
  std::memcpy(&header_size, mapping_->data(), 8);
  if (header_size > kMaxHeaderBytes) {
    return corrupt("header length " + std::to_string(header_size) + " is beyond the limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes");
  }
  if (header_size > file_size - 8) {
    return corrupt("header length " + std::to_string(header_size) + " exceeds the file size of " +
                   std::to_string(file_size) + " bytes");
  }
  data_start_ = 8 + header_size;
  data_size_ = file_size - data_start_;

  // Top-level keys are collected as they are parsed, since the object itself keeps only the last
  // of two equal keys. Containers nested past kMaxHeaderDepth (the callback's depth counts those
  // around one) are dropped as they are parsed, before an ordered object growing around them copies
  // them: the copy recurses once per level and would overflow the stack on a hostile file.
  std::set<std::string> seen_keys;
  std::string duplicate;
  bool too_deep = false;
  auto on_event = [&](int depth, OrderedJson::parse_event_t event, OrderedJson& parsed) {
    if (depth == 1 && event == OrderedJson::parse_event_t::key && duplicate.empty()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (!seen_keys.insert(key).second) duplicate = key;
    }
    if (depth >= kMaxHeaderDepth && (event == OrderedJson::parse_event_t::object_start ||
                                     event == OrderedJson::parse_event_t::array_start)) {
      too_deep = true;
      return false;
    }
    return true;
  };
  OrderedJson header;
  const char* text = reinterpret_cast<const char*>(mapping_->data()) + 8;
  try {
    header = OrderedJson::parse(text, text + header_size, on_event);
  } catch (const nlohmann::json::exception& e) {
    return corrupt("header is not valid JSON: " + std::string(e.what()));
  }
  if (too_deep) return corrupt("header nests deeper than " + std::to_string(kMaxHeaderDepth) + " levels");
  if (!header.is_object()) return corrupt("header is not a JSON object");
  if (!duplicate.empty()) return corrupt("header names '" + duplicate + "' twice");

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) return corrupt("__metadata__ is not an object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) return corrupt("__metadata__ entry '" + key + "' is not a string");
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!entry.is_object()) return corrupt(where + " entry is not an object");

    SafetensorsTensorInfo info;
    info.name = name;
    auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string()) return corrupt(where + " has no dtype string");
    std::optional<SafetensorsDType> dtype = DTypeFromName(dtype_it->get_ref<const std::string&>());
    if (!dtype) return corrupt(where + " has unknown dtype '" + dtype_it->get<std::string>() + "'");
    info.dtype = *dtype;

    auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array()) return corrupt(where + " has no shape list");
    uint64_t num_elements = 1;
    bool has_zero_dim = false;
    for (const OrderedJson& dim_json : *shape_it) {
      uint64_t dim = 0;
      if (!AsUint64(dim_json, &dim) || dim > static_cast<uint64_t>(INT64_MAX)) {
        return corrupt(where + " has a shape that is not a list of non-negative integers");
      }
      info.shape.push_back(static_cast<int64_t>(dim));
      has_zero_dim = has_zero_dim || dim == 0;
      if (!has_zero_dim && __builtin_mul_overflow(num_elements, dim, &num_elements)) {
        return corrupt(where + " has a shape " + ShapeString(info.shape) + " too large for any file");
      }
    }
    if (has_zero_dim) num_elements = 0;
    uint64_t expected_bytes = 0;
    if (__builtin_mul_overflow(num_elements, SafetensorsDTypeSize(info.dtype), &expected_bytes)) {
      return corrupt(where + " has a shape " + ShapeString(info.shape) + " too large for any file");
    }

    auto offsets_it = entry.find("data_offsets");
    if (offsets_it == entry.end() || !offsets_it->is_array() || offsets_it->size() != 2 ||
        !AsUint64((*offsets_it)[0], &info.begin) || !AsUint64((*offsets_it)[1], &info.end)) {
      return corrupt(where + " data_offsets is not a list of two non-negative integers");
    }
    const std::string range = "[" + std::to_string(info.begin) + ", " + std::to_string(info.end) + ")";
    if (info.begin > info.end) return corrupt(where + " data range " + range + " ends before it begins");
    if (info.end > data_size_) {
      return corrupt(where + " data range " + range + " exceeds the data section of " + std::to_string(data_size_) +
                     " bytes");
    }
    if (info.num_bytes() != expected_bytes) {
      return corrupt(where + " data range " + range + " holds " + std::to_string(info.num_bytes()) +
                     " bytes but shape " + ShapeString(info.shape) + " of " +
                     std::string(SafetensorsDTypeName(info.dtype)) + " needs " + std::to_string(expected_bytes));
    }
    index_[info.name] = tensors_.size();
    tensors_.push_back(std::move(info));
  }

  // Gaps between tensors are tolerated (nothing reads them); shared bytes are not.
  std::vector<const SafetensorsTensorInfo*> by_offset;
  for (const SafetensorsTensorInfo& t : tensors_) {
    if (t.num_bytes() > 0) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return std::tie(a->begin, a->end) < std::tie(b->begin, b->end); });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i]->begin < by_offset[i - 1]->end) {
      return corrupt("tensors '" + by_offset[i - 1]->name + "' and '" + by_offset[i]->name + "' overlap");
    }
  }
  return OkStatus();
}

const SafetensorsTensorInfo* SafetensorsFile::Find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

std::string_view SafetensorsFile::RawBytes(const SafetensorsTensorInfo& info) const {
  if (info.begin > info.end || info.end > data_size_ || info.begin == info.end) return {};
  return {reinterpret_cast<const char*>(mapping_->data() + data_start_ + info.begin),
          static_cast<size_t>(info.num_bytes())};
}

StatusOr<torch::Tensor> SafetensorsFile::Load(const std::string& name) const {
  const SafetensorsTensorInfo* info = Find(name);
  if (info == nullptr) return NotFoundError(OneLine(path_ + ": no tensor '" + name + "'"));
  try {
    torch::Tensor tensor = torch::empty(info->shape, torch::TensorOptions().dtype(ToScalarType(info->dtype)));
    std::string_view bytes = RawBytes(*info);
    if (!bytes.empty()) std::memcpy(tensor.data_ptr(), bytes.data(), bytes.size());
    return tensor;
  } catch (const std::exception& e) {
    return LoadError(path_, name, e);
  }
}

StatusOr<torch::Tensor> SafetensorsFile::LoadAs(const std::string& name, torch::ScalarType dtype,
                                               const torch::Device& device) const {
  const SafetensorsTensorInfo* info = Find(name);
  if (info == nullptr) return NotFoundError(OneLine(path_ + ": no tensor '" + name + "'"));
  try {
    std::string_view bytes = RawBytes(*info);
    const size_t item_size = SafetensorsDTypeSize(info->dtype);
    const bool aligned = reinterpret_cast<uintptr_t>(bytes.data()) % item_size == 0;
    if (bytes.empty() || !aligned) {
      // Unaligned data (legal in the format, never written by the reference writer) is copied first.
      ASSIGN_OR_RETURN(torch::Tensor copy, Load(name));
      return copy.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
    }
    // The view aliases read-only memory: it is only read, by the copying conversion below.
    torch::Tensor view = torch::from_blob(const_cast<char*>(bytes.data()), info->shape,
                                          torch::TensorOptions().dtype(ToScalarType(info->dtype)));
    return view.to(device, dtype, /*non_blocking=*/false, /*copy=*/true);
  } catch (const std::exception& e) {
    return LoadError(path_, name, e);
  }
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

struct PreparedTensor {
  std::string name;
  torch::Tensor cpu;  // contiguous
  SafetensorsDType dtype;
  uint64_t num_bytes;
};

StatusOr<std::vector<PreparedTensor>> PrepareTensors(
    const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  std::vector<PreparedTensor> prepared;
  std::set<std::string> names;
  for (const auto& [name, tensor] : tensors) {
    const std::string where = OneLine(path + ": tensor '" + name + "'");
    if (name == "__metadata__") return InvalidArgumentError(where + " has a name the format reserves");
    if (!names.insert(name).second) return InvalidArgumentError(where + " is given twice");
    if (!tensor.defined()) return InvalidArgumentError(where + " is undefined");
    std::optional<SafetensorsDType> dtype = DTypeFromScalarType(tensor.scalar_type());
    if (!dtype) {
      return InvalidArgumentError(where + " has dtype " + std::string(c10::toString(tensor.scalar_type())) +
                                  ", which safetensors files here cannot hold");
    }
    try {
      torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous();
      prepared.push_back({name, cpu, *dtype, static_cast<uint64_t>(cpu.numel()) * SafetensorsDTypeSize(*dtype)});
    } catch (const std::exception& e) {
      return InvalidArgumentError(where + " cannot be copied to the CPU: " + ExceptionText(e));
    }
  }
  return prepared;
}

// The header, padded with spaces to a multiple of 8 bytes so that the data section is aligned.
StatusOr<std::string> MakeHeader(const std::string& path, const std::vector<PreparedTensor>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (const PreparedTensor& t : tensors) {
    OrderedJson entry = OrderedJson::object();
    entry["dtype"] = std::string(SafetensorsDTypeName(t.dtype));
    entry["shape"] = t.cpu.sizes().vec();
    entry["data_offsets"] = {offset, offset + t.num_bytes};
    header[t.name] = std::move(entry);
    offset += t.num_bytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(path + ": a tensor name or metadata entry is not valid UTF-8: " + OneLine(e.what()));
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

}  // namespace

Status WriteSafetensors(const std::string& path, const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  if (IsGzipPath(path)) return InvalidArgumentError(path + ": safetensors files cannot be gzipped");
  ASSIGN_OR_RETURN(std::vector<PreparedTensor> prepared, PrepareTensors(path, tensors));
  ASSIGN_OR_RETURN(std::string header, MakeHeader(path, prepared, metadata));
  ASSIGN_OR_RETURN(std::unique_ptr<FileWriter> writer, FileWriter::Open(path));
  char length[8];
  const uint64_t header_size = header.size();
  std::memcpy(length, &header_size, 8);
  RETURN_IF_ERROR(writer->Write(std::string_view(length, 8)));
  RETURN_IF_ERROR(writer->Write(header));
  for (const PreparedTensor& t : prepared) {
    if (t.num_bytes == 0) continue;
    RETURN_IF_ERROR(writer->Write(std::string_view(static_cast<const char*>(t.cpu.data_ptr()), t.num_bytes)));
  }
  return writer->Close();
}

}  // namespace dtm
