#include "worker/engine/checkpoint.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <set>
#include <system_error>
#include <thread>

#include "common/jsonl.h"
#include "common/sha256.h"
#include "common/user_text.h"
#include "worker/engine/tensor_util.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;

std::string JoinPath(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

bool IsFile(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

bool IsFloatingPoint(SafetensorsDType dtype) {
  return dtype == SafetensorsDType::kF32 || dtype == SafetensorsDType::kF16 || dtype == SafetensorsDType::kBF16 ||
         dtype == SafetensorsDType::kF64;
}

// A shard name from a weight map must name a file in the folder itself.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Opening

Checkpoint::~Checkpoint() = default;

StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return NotFoundError(dir + ": no such checkpoint folder");
  std::unique_ptr<Checkpoint> checkpoint(new Checkpoint(dir));
  const std::string config_path = JoinPath(dir, kConfigFileName);
  if (!IsFile(config_path)) return NotFoundError(config_path + ": not found; a checkpoint folder needs config.json");
  ASSIGN_OR_RETURN(checkpoint->config_json_, ReadJsonFile(config_path));
  ASSIGN_OR_RETURN(checkpoint->config_, ParseLlamaConfig(checkpoint->config_json_, config_path));
  RETURN_IF_ERROR(checkpoint->OpenWeights());
  RETURN_IF_ERROR(checkpoint->OpenQuantization());
  RETURN_IF_ERROR(checkpoint->CheckLlamaTensors());
  return checkpoint;
}

Status Checkpoint::OpenQuantization() {
  if (!config_json_.contains("quantization_config") || config_json_.at("quantization_config").is_null()) {
    return OkStatus();
  }
  ASSIGN_OR_RETURN(quantization_,
                   CompressedTensorsLayout::Parse(config_json_.at("quantization_config"), LlamaLinearModules(config_),
                                                  JoinPath(dir_, kConfigFileName)));
  return OkStatus();
}

StoredTensors Checkpoint::Stored() const {
  return {[this](const std::string& name) { return Find(name); },
          [this](const std::string& name) -> StatusOr<torch::Tensor> {
            auto it = tensors_.find(name);
            if (it == tensors_.end()) return NotFoundError(OneLine(dir_ + ": checkpoint has no tensor '" + name + "'"));
            return it->second.file->Load(name);
          }};
}

const CtWeightScheme* Checkpoint::QuantizedModuleOf(const std::string& tensor, std::string* module) const {
  if (quantization_ == nullptr) return nullptr;
  std::optional<std::string> m = ModuleOfWeight(tensor);
  if (!m) return nullptr;
  *module = std::move(*m);
  return quantization_->SchemeOf(*module);
}

// transformers' order: a single model.safetensors first, then the sharded index.
Status Checkpoint::OpenWeights() {
  const std::string single_path = JoinPath(dir_, kSingleWeightsFileName);
  if (IsFile(single_path)) {
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(single_path));
    return AddFile(std::move(file));
  }
  const std::string index_path = JoinPath(dir_, kWeightsIndexFileName);
  if (IsFile(index_path)) return OpenShards(index_path);
  if (IsFile(JoinPath(dir_, "pytorch_model.bin")) || IsFile(JoinPath(dir_, "pytorch_model.bin.index.json"))) {
    return UnimplementedError(dir_ + ": PyTorch .bin checkpoints are not supported; convert them to safetensors");
  }
  return NotFoundError(dir_ + ": no weights: neither " + kSingleWeightsFileName + " nor " + kWeightsIndexFileName);
}

Status Checkpoint::OpenShards(const std::string& index_path) {
  ASSIGN_OR_RETURN(nlohmann::json index, ReadJsonFile(index_path));
  auto corrupt = [&](const std::string& what) { return DataLossError(OneLine(index_path + ": " + what)); };
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
    return corrupt("no \"weight_map\" object");
  }
  std::map<std::string, std::string> weight_map;  // tensor -> shard file name
  std::set<std::string> shard_names;
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) return corrupt("weight_map entry '" + tensor + "' is not a file name");
    const std::string& name = shard.get_ref<const std::string&>();
    if (!IsPlainFileName(name)) return corrupt("weight_map names '" + name + "', which is not a file in the folder");
    weight_map[tensor] = name;
    shard_names.insert(name);
  }
  if (weight_map.empty()) return corrupt("weight_map is empty");
  for (const std::string& name : shard_names) {
    const std::string shard_path = JoinPath(dir_, name);
    if (!IsFile(shard_path)) {
      return NotFoundError(OneLine(index_path + ": weight_map names shard '" + name + "', but " + shard_path +
                                   " does not exist"));
    }
    ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(shard_path));
    RETURN_IF_ERROR(AddFile(std::move(file)));
  }
  for (const auto& [tensor, shard] : weight_map) {
    auto it = tensors_.find(tensor);
    if (it == tensors_.end() || fs::path(it->second.file->path()).filename() != shard) {
      return corrupt("weight_map puts tensor '" + tensor + "' in " + shard + ", which does not hold it");
    }
  }
  return OkStatus();
}

Status Checkpoint::AddFile(std::unique_ptr<SafetensorsFile> file) {
  for (const SafetensorsTensorInfo& info : file->tensors()) {
    auto [it, inserted] = tensors_.emplace(info.name, Location{file.get(), &info});
    if (!inserted) {
      return DataLossError(OneLine(dir_ + ": tensor '" + info.name + "' appears in both " + it->second.file->path() +
                                   " and " + file->path()));
    }
  }
  files_.push_back(std::move(file));
  return OkStatus();
}

Status Checkpoint::CheckLlamaTensors() const {
  for (const auto& [name, shape] : ExpectedLlamaTensors(config_)) {
    std::string module;
    if (QuantizedModuleOf(name, &module) != nullptr) {
      RETURN_IF_ERROR(quantization_->Check(module, shape[0], shape[1], Stored()));
      continue;
    }
    auto it = tensors_.find(name);
    if (it == tensors_.end()) return NotFoundError(dir_ + ": checkpoint has no tensor '" + name + "'");
    const SafetensorsTensorInfo& info = *it->second.info;
    if (info.shape != shape) {
      return InvalidArgumentError(OneLine("tensor '" + name + "' in " + it->second.file->path() + " has shape " +
                                          ShapeString(info.shape) + ", but config.json implies " + ShapeString(shape)));
    }
    if (!IsFloatingPoint(info.dtype)) {
      return InvalidArgumentError(OneLine("tensor '" + name + "' in " + it->second.file->path() + " has dtype " +
                                          std::string(SafetensorsDTypeName(info.dtype)) +
                                          "; Llama weights must be floating point"));
    }
  }
  return OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Reading

bool Checkpoint::Has(const std::string& name) const {
  std::string module;
  return tensors_.count(name) > 0 || QuantizedModuleOf(name, &module) != nullptr;
}

const SafetensorsTensorInfo* Checkpoint::Find(const std::string& name) const {
  auto it = tensors_.find(name);
  return it == tensors_.end() ? nullptr : it->second.info;
}

std::vector<std::string> Checkpoint::TensorNames() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& entry : tensors_) names.push_back(entry.first);
  return names;
}

std::vector<std::string> Checkpoint::WeightFiles() const {
  std::vector<std::string> paths;
  for (const auto& file : files_) paths.push_back(file->path());
  return paths;
}

StatusOr<torch::Tensor> Checkpoint::Load(const std::string& name, const std::vector<int64_t>& expected_shape,
                                         torch::ScalarType dtype, const torch::Device& device) const {
  std::string module;
  if (QuantizedModuleOf(name, &module) != nullptr) {
    if (expected_shape.size() != 2) {
      return InvalidArgumentError(OneLine("tensor '" + name + "' is a quantized [out, in] weight, expected " +
                                          ShapeString(expected_shape)));
    }
    ASSIGN_OR_RETURN(torch::Tensor dense,
                     quantization_->Dequantize(module, expected_shape[0], expected_shape[1], Stored()));
    return dense.to(device, dtype);
  }
  auto it = tensors_.find(name);
  if (it == tensors_.end()) return NotFoundError(OneLine(dir_ + ": checkpoint has no tensor '" + name + "'"));
  const Location& where = it->second;
  if (where.info->shape != expected_shape) {
    return InvalidArgumentError(OneLine("tensor '" + name + "' in " + where.file->path() + " has shape " +
                                        ShapeString(where.info->shape) + ", expected " + ShapeString(expected_shape)));
  }
  return where.file->LoadAs(name, dtype, device);
}

StatusOr<std::string> Checkpoint::Fingerprint() const {
  std::lock_guard<std::mutex> lock(fingerprint_mu_);
  if (fingerprint_) return *fingerprint_;

  // Each tensor's bytes are hashed on their own, in parallel; the fingerprint hashes those digests
  // with the names, dtypes and shapes. Shards and tensor order within files play no part.
  std::vector<const Location*> order;
  for (const auto& entry : tensors_) order.push_back(&entry.second);
  std::vector<std::string> digests(order.size());
  std::atomic<size_t> next{0};
  auto hash_some = [&] {
    for (size_t i; (i = next.fetch_add(1)) < order.size();) {
      digests[i] = Sha256Hex(order[i]->file->RawBytes(*order[i]->info));
    }
  };
  const size_t workers = std::min<size_t>({std::max(1u, std::thread::hardware_concurrency()), 8, order.size()});
  std::vector<std::thread> threads;
  try {
    for (size_t k = 1; k < workers; ++k) threads.emplace_back(hash_some);
  } catch (const std::system_error&) {
    // Fewer threads only make it slower.
  }
  hash_some();
  for (std::thread& t : threads) t.join();

  Sha256 hasher;
  hasher.Update("dtm checkpoint fingerprint v1\n");
  hasher.Update(config_json_.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  hasher.Update("\n");
  size_t i = 0;
  for (const auto& [name, location] : tensors_) {
    // The name's length first, so that no name can run into the fields after it.
    hasher.Update(std::to_string(name.size()) + ":" + name + " " +
                  std::string(SafetensorsDTypeName(location.info->dtype)) + " " +
                  ShapeString(location.info->shape) + " " + digests[i++] + "\n");
  }
  fingerprint_ = hasher.HexDigest();
  return *fingerprint_;
}

// ---------------------------------------------------------------------------------------------
// Writing

namespace {

std::string ShardName(size_t index, size_t count) {
  char name[64];
  std::snprintf(name, sizeof(name), "model-%05zu-of-%05zu.safetensors", index + 1, count);
  return name;
}

// Fills shards in the given order; a tensor larger than the limit gets a shard of its own.
std::vector<std::vector<size_t>> PlanShards(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                            int64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards;
  int64_t current_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const int64_t bytes = tensors[i].second.defined() ? tensors[i].second.numel() * tensors[i].second.element_size() : 0;
    if (shards.empty() || (current_bytes > 0 && current_bytes + bytes > max_shard_bytes)) {
      shards.emplace_back();
      current_bytes = 0;
    }
    shards.back().push_back(i);
    current_bytes += bytes;
  }
  return shards;
}

std::string DTypeOfWeights(const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                           const std::string& fallback) {
  for (const auto& entry : tensors) {
    if (entry.second.defined() && entry.second.is_floating_point()) return DTypeName(entry.second.scalar_type());
  }
  return fallback;
}

}  // namespace

Status WriteCheckpoint(const std::string& dir, const LlamaConfig& config,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors, int64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return InternalError(dir + ": cannot create the checkpoint folder: " + ec.message());

  std::set<std::string> names;
  for (const auto& entry : tensors) {
    if (!names.insert(entry.first).second) {
      return InvalidArgumentError(OneLine(dir + ": tensor '" + entry.first + "' is given twice"));
    }
  }
  LlamaConfig written = config;
  written.torch_dtype = DTypeOfWeights(tensors, config.torch_dtype);
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};  // transformers checks it

  int64_t total_bytes = 0;
  for (const auto& entry : tensors) {
    if (entry.second.defined()) total_bytes += entry.second.numel() * entry.second.element_size();
  }
  const std::string single_path = JoinPath(dir, kSingleWeightsFileName);
  const std::string index_path = JoinPath(dir, kWeightsIndexFileName);
  if (max_shard_bytes <= 0 || total_bytes <= max_shard_bytes) {
    RETURN_IF_ERROR(WriteSafetensors(single_path, tensors, metadata));
    fs::remove(index_path, ec);
  } else {
    std::vector<std::vector<size_t>> shards = PlanShards(tensors, max_shard_bytes);
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t s = 0; s < shards.size(); ++s) {
      const std::string shard_name = ShardName(s, shards.size());
      std::vector<std::pair<std::string, torch::Tensor>> shard_tensors;
      for (size_t i : shards[s]) {
        shard_tensors.push_back(tensors[i]);
        weight_map[tensors[i].first] = shard_name;
      }
      RETURN_IF_ERROR(WriteSafetensors(JoinPath(dir, shard_name), shard_tensors, metadata));
    }
    nlohmann::json index = {{"metadata", {{"total_size", total_bytes}}}, {"weight_map", weight_map}};
    std::string text;
    try {
      text = index.dump(2) + "\n";
    } catch (const nlohmann::json::exception& e) {
      return InvalidArgumentError(OneLine(index_path + ": a tensor name is not valid UTF-8: " + e.what()));
    }
    RETURN_IF_ERROR(WriteTextFile(index_path, text));
    fs::remove(single_path, ec);
  }
  return WriteTextFile(JoinPath(dir, kConfigFileName), written.ToJson().dump(2) + "\n");
}

std::vector<std::string> LlamaLinearModules(const LlamaConfig& config) {
  std::vector<std::string> modules;
  for (const auto& [name, shape] : ExpectedLlamaTensors(config)) {
    if (shape.size() != 2 || name == "model.embed_tokens.weight") continue;
    modules.push_back(*ModuleOfWeight(name));
  }
  return modules;
}

std::optional<std::string> ModuleOfWeight(const std::string& tensor) {
  const std::string suffix = ".weight";
  if (tensor.size() <= suffix.size() || tensor.compare(tensor.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return std::nullopt;
  }
  return tensor.substr(0, tensor.size() - suffix.size());
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedLlamaTensors(const LlamaConfig& config) {
  const int64_t v = config.vocab_size, d = config.hidden_size, ffn = config.intermediate_size;
  const int64_t hd = config.num_attention_heads > 0 ? config.head_dim() : 0;
  const int64_t q_rows = config.num_attention_heads * hd, kv_rows = config.num_key_value_heads * hd;
  std::vector<std::pair<std::string, std::vector<int64_t>>> expected;
  expected.push_back({"model.embed_tokens.weight", {v, d}});
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    expected.push_back({p + "input_layernorm.weight", {d}});
    expected.push_back({p + "self_attn.q_proj.weight", {q_rows, d}});
    expected.push_back({p + "self_attn.k_proj.weight", {kv_rows, d}});
    expected.push_back({p + "self_attn.v_proj.weight", {kv_rows, d}});
    expected.push_back({p + "self_attn.o_proj.weight", {d, q_rows}});
    expected.push_back({p + "post_attention_layernorm.weight", {d}});
    expected.push_back({p + "mlp.gate_proj.weight", {ffn, d}});
    expected.push_back({p + "mlp.up_proj.weight", {ffn, d}});
    expected.push_back({p + "mlp.down_proj.weight", {d, ffn}});
  }
  expected.push_back({"model.norm.weight", {d}});
  if (!config.tie_word_embeddings) expected.push_back({"lm_head.weight", {v, d}});
  return expected;
}

Status CheckOutputFolderIsFree(const std::string& dir, const std::string& what) {
  namespace fs = std::filesystem;
  if (dir.empty()) return InvalidArgumentError(what + ": empty path");
  std::error_code ec;
  const fs::file_status st = fs::status(dir, ec);
  if (ec && ec != std::errc::no_such_file_or_directory) return InvalidArgumentError(what + " " + dir + ": " + ec.message());
  if (!fs::exists(st)) return OkStatus();
  if (!fs::is_directory(st)) {
    return FailedPreconditionError(what + " " + dir + " exists and is not a folder; refusing to overwrite it");
  }
  if (!fs::is_empty(dir, ec) || ec) {
    return FailedPreconditionError(what + " " + dir + " is not empty; refusing to overwrite it (choose a new or empty folder)");
  }
  return OkStatus();
}

}  // namespace dtm
