// A Hugging Face Llama checkpoint folder: config.json plus model.safetensors, or shards named by
// model.safetensors.index.json ({"metadata": ..., "weight_map": {tensor: shard file}}).
//
// Open() validates everything it can without reading tensor data (every shard's header, the
// weight map, the presence, shape and dtype of every tensor the Llama math needs), so that a broken
// folder fails at once with a message naming the file, not hours into a job.
//
// A compressed-tensors checkpoint (config.json's quantization_config; compressed_tensors.h) is read
// as the dense model: Load() dequantizes a quantized module's weight, Has() knows it.
//
// Errors (one line): NOT_FOUND for a missing folder, file or tensor; DATA_LOSS for malformed or
// inconsistent files; INVALID_ARGUMENT for a tensor of the wrong shape or dtype; UNIMPLEMENTED for
// PyTorch .bin checkpoints and unsupported Llama variants (see model_config.h).
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "worker/engine/compressed_tensors.h"
#include "worker/engine/model_config.h"
#include "worker/engine/safetensors.h"
#include "common/status.h"

namespace dtm {

inline constexpr char kConfigFileName[] = "config.json";
inline constexpr char kSingleWeightsFileName[] = "model.safetensors";
inline constexpr char kWeightsIndexFileName[] = "model.safetensors.index.json";

// An open checkpoint: its config and memory-mapped weight files. Thread-safe (all methods const).
class Checkpoint {
 public:
  static StatusOr<std::unique_ptr<Checkpoint>> Open(const std::string& dir);
  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  const LlamaConfig& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  // A stored tensor, or the dense weight of a quantized module.
  bool Has(const std::string& name) const;
  // The stored dtype, shape and byte range of `name`; nullptr if absent (and for a quantized
  // module's dense weight, which is not stored as such).
  const SafetensorsTensorInfo* Find(const std::string& name) const;
  // Every stored tensor name, sorted.
  std::vector<std::string> TensorNames() const;
  // The paths of the weight files (model.safetensors or the shards).
  std::vector<std::string> WeightFiles() const;
  // The quantization of a compressed-tensors checkpoint; nullptr for an unquantized one.
  const CompressedTensorsLayout* quantization() const { return quantization_.get(); }

  // Loads `name`, checks its shape equals `expected_shape` (the error names tensor, file and both
  // shapes), converts it to `dtype` and puts it on `device`. The result never aliases the file. A
  // quantized module's weight is dequantized (in its scale's dtype) and then converted.
  StatusOr<torch::Tensor> Load(const std::string& name, const std::vector<int64_t>& expected_shape,
                               torch::ScalarType dtype, const torch::Device& device) const;

  // SHA-256 over config.json's parsed content (its canonical dump) and every tensor's name, dtype,
  // shape and bytes, in sorted name order: the same weights give the same fingerprint whatever the
  // sharding or file layout. Reads every byte once (on several threads); the result is cached.
  StatusOr<std::string> Fingerprint() const;

 private:
  struct Location {
    const SafetensorsFile* file;
    const SafetensorsTensorInfo* info;
  };

  explicit Checkpoint(std::string dir) : dir_(std::move(dir)) {}
  Status OpenWeights();
  Status OpenShards(const std::string& index_path);
  Status AddFile(std::unique_ptr<SafetensorsFile> file);
  Status CheckLlamaTensors() const;
  Status OpenQuantization();
  StoredTensors Stored() const;
  // "model.layers.0.mlp.up_proj" for "model.layers.0.mlp.up_proj.weight" when that module is quantized.
  const CtWeightScheme* QuantizedModuleOf(const std::string& tensor, std::string* module) const;

  std::string dir_;
  nlohmann::json config_json_;
  LlamaConfig config_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, Location> tensors_;  // sorted by name, for the fingerprint
  std::unique_ptr<CompressedTensorsLayout> quantization_;

  mutable std::mutex fingerprint_mu_;
  mutable std::optional<std::string> fingerprint_;
};

// The files besides config.json and the weights that make a checkpoint folder usable by transformers
// and dtmctl; a folder derived from another (apply, training) copies those the source has.
// OK when `dir` does not exist or is an empty folder: where a new model folder may be written
// without overwriting one that could be taken for it. INVALID_ARGUMENT for an empty path or an
// unreadable one, FAILED_PRECONDITION otherwise; `what` names the setting in the message ("--out").
Status CheckOutputFolderIsFree(const std::string& dir, const std::string& what);

inline constexpr const char* kCheckpointSideFiles[] = {
    "tokenizer.json",          "tokenizer.model",        "tokenizer_config.json",
    "special_tokens_map.json", "generation_config.json", "added_tokens.json"};

// Writes an HF checkpoint folder (created if needed): config.json (config.ToJson() with
// torch_dtype set from the first floating-point tensor) and model.safetensors, or, when
// max_shard_bytes > 0 and the tensors exceed it, shards model-0000i-of-0000K.safetensors (filled in
// the given order, a shard holding at least one tensor) plus model.safetensors.index.json. The
// weights file of the other layout is removed, so that a rewritten folder is not ambiguous.
Status WriteCheckpoint(const std::string& dir, const LlamaConfig& config,
                       const std::vector<std::pair<std::string, torch::Tensor>>& tensors, int64_t max_shard_bytes = 0);

// The HF tensor names and shapes a Llama with this config must have, in model order:
// model.embed_tokens.weight [V, D]; per layer i, model.layers.{i}.:
//   input_layernorm.weight [D], self_attn.q_proj.weight [H*hd, D], self_attn.k_proj.weight [KVH*hd, D],
//   self_attn.v_proj.weight [KVH*hd, D], self_attn.o_proj.weight [D, H*hd],
//   post_attention_layernorm.weight [D], mlp.gate_proj.weight [I, D], mlp.up_proj.weight [I, D],
//   mlp.down_proj.weight [D, I];
// model.norm.weight [D]; lm_head.weight [V, D] unless tie_word_embeddings.
std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedLlamaTensors(const LlamaConfig& config);

// The Linear modules among them, in model order: every 2-D weight but the embedding, named without
// ".weight" (each layer's seven projections, and lm_head unless tie_word_embeddings).
std::vector<std::string> LlamaLinearModules(const LlamaConfig& config);

// "model.layers.0.mlp.up_proj" for "model.layers.0.mlp.up_proj.weight"; nullopt for a name that is
// not a module's `weight`.
std::optional<std::string> ModuleOfWeight(const std::string& tensor);

}  // namespace dtm
