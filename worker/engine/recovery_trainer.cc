#include "worker/engine/recovery_trainer.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include <ATen/autocast_mode.h>
#include <torch/version.h>
#include <nlohmann/json.hpp>

#include "common/jsonl.h"
#include "common/sha256.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/engine_error.h"
#include "worker/engine/safetensors.h"
#include "worker/engine/sharded_adamw.h"

namespace dtm {
namespace {

namespace fs = std::filesystem;

constexpr char kLatestFile[] = "latest";
constexpr char kWeightsFile[] = "weights.safetensors";
constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kStateFile[] = "state.json";

bool IsLinearWeight(const std::string& name) {
  const std::string suffix = "_proj.weight";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// The phase that step `step` (0-based, over all phases) belongs to, and whether it is its first.
const TrainingPhase& PhaseAt(const std::vector<TrainingPhase>& phases, int64_t step, bool* first) {
  int64_t begin = 0;
  for (const TrainingPhase& p : phases) {
    if (step < begin + p.steps) {
      *first = step == begin;
      return p;
    }
    begin += p.steps;
  }
  *first = false;
  return phases.back();
}

double LearningRateAt(const RecoveryTrainingOptions& o, int64_t step, int64_t total) {
  if (step < o.warmup_steps) return o.learning_rate * static_cast<double>(step + 1) / static_cast<double>(o.warmup_steps);
  if (o.schedule != "cosine") return o.learning_rate;
  const double span = static_cast<double>(std::max<int64_t>(1, total - 1 - o.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup_steps) / span);
  return o.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace

nlohmann::json TrainingRunIdentity(const TrainingData& data, const std::map<std::string, torch::Tensor>& masks,
                                   const RecoveryTrainingOptions& o, int gang_size) {
  Sha256 hash;
  for (const auto& [name, mask] : masks) {
    torch::Tensor bytes = mask.to(torch::kCPU).to(torch::kUInt8).contiguous();
    hash.Update(name + "\n");
    hash.Update(std::string_view(static_cast<const char*>(bytes.data_ptr()), static_cast<size_t>(bytes.numel())));
  }
  nlohmann::json phases = nlohmann::json::array();
  for (const TrainingPhase& p : o.phases) phases.push_back({{"masked", p.masked}, {"steps", p.steps}});
  return {{"data", data.fingerprint},
          {"data_seed", data.seed},
          {"masks", hash.HexDigest()},
          {"phases", phases},
          {"batch_size", o.batch_size},
          {"micro_batch", o.micro_batch},
          {"learning_rate", o.learning_rate},
          {"warmup_steps", o.warmup_steps},
          {"schedule", o.schedule},
          {"adamw", {o.adamw.beta1, o.adamw.beta2, o.adamw.eps, o.adamw.weight_decay}},
          {"clip_grad_norm", o.clip_grad_norm},
          // A sharded optimizer's files are per member: such a checkpoint resumes on a gang of its size.
          {"optimizer", gang_size > 1 && o.shard_optimizer ? "zero1-of-" + std::to_string(gang_size)
                                                             : std::string("replicated")}};
}

namespace {

struct Trainable {
  std::vector<std::string> names;
  std::vector<torch::Tensor> params;
  std::vector<torch::Tensor> masks;  // per param; undefined where it has no mask
};

// The optimizer as a checkpoint sees it: AdamW replicated on every member (member 0 saves it whole),
// or sharded (every member saves its range to a file of its own).
struct OptimizerState {
  std::unique_ptr<AdamW> replicated;
  std::unique_ptr<ShardedAdamW> sharded;
  std::string file;  // in the checkpoint folder
  bool writes = true;  // whether this member writes `file`

  AdamW& adamw() { return sharded ? sharded->shard() : *replicated; }
  // The live moment tensors by their names in `file`.
  std::vector<std::pair<std::string, torch::Tensor>> Moments(const Trainable& t) {
    AdamW& a = adamw();
    if (sharded) return {{"exp_avg", a.exp_avg()[0]}, {"exp_avg_sq", a.exp_avg_sq()[0]}};
    std::vector<std::pair<std::string, torch::Tensor>> out;
    for (size_t i = 0; i < t.params.size(); ++i) {
      out.emplace_back("exp_avg." + t.names[i], a.exp_avg()[i]);
      out.emplace_back("exp_avg_sq." + t.names[i], a.exp_avg_sq()[i]);
    }
    return out;
  }
};

// Member 0 writes the weights and the state, every member that holds optimizer state its file, into
// a folder member 0 creates and, once every member has written, renames into place (the barriers
// order them; without a gang there is nothing to order).
Status SaveCheckpoint(const std::string& dir, int64_t step, const Trainable& t, OptimizerState& optimizer,
                      const std::vector<double>& losses, const nlohmann::json& identity, Gang* gang) {
  const bool lead = gang == nullptr || gang->rank() == 0;
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  const fs::path final_dir = fs::path(dir) / name;
  const fs::path tmp_dir = fs::path(dir) / (std::string(name) + ".tmp");
  std::error_code ec;
  if (lead) {
    fs::remove_all(tmp_dir, ec);
    fs::create_directories(tmp_dir, ec);
    if (ec) return InternalError("training checkpoint: cannot create " + tmp_dir.string() + ": " + ec.message());
  }
  if (gang != nullptr) RETURN_IF_ERROR(gang->Barrier());
  if (lead) {
    std::vector<std::pair<std::string, torch::Tensor>> weights;
    for (size_t i = 0; i < t.params.size(); ++i) weights.emplace_back(t.names[i], t.params[i].detach());
    RETURN_IF_ERROR(WriteSafetensors((tmp_dir / kWeightsFile).string(), weights));
  }
  if (optimizer.writes) RETURN_IF_ERROR(WriteSafetensors((tmp_dir / optimizer.file).string(), optimizer.Moments(t)));
  if (gang != nullptr) RETURN_IF_ERROR(gang->Barrier());
  if (lead) {
    nlohmann::json state = {
        {"step", step}, {"optimizer_steps", optimizer.adamw().steps()}, {"losses", losses}, {"run", identity}};
    RETURN_IF_ERROR(WriteTextFile((tmp_dir / kStateFile).string(), state.dump(1) + "\n"));
    fs::remove_all(final_dir, ec);
    fs::rename(tmp_dir, final_dir, ec);
    if (ec) return InternalError("training checkpoint: cannot rename " + tmp_dir.string() + ": " + ec.message());
    // `latest` moves only once the folder it names is whole; older folders go after that.
    RETURN_IF_ERROR(WriteTextFile((fs::path(dir) / kLatestFile).string(), std::string(name) + "\n"));
    for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec)) {
      const std::string other = entry.path().filename().string();
      if (other.rfind("step-", 0) == 0 && other != name) fs::remove_all(entry.path(), ec);
    }
  }
  return gang != nullptr ? gang->Barrier() : OkStatus();
}

// Loads the newest checkpoint of `dir` into the params and this member's optimizer state; returns
// its step, or 0 when the folder holds none.
StatusOr<int64_t> LoadCheckpoint(const std::string& dir, Trainable& t, OptimizerState& optimizer,
                                 std::vector<double>* losses, const nlohmann::json& identity) {
  const fs::path latest = fs::path(dir) / kLatestFile;
  std::error_code ec;
  if (!fs::exists(latest, ec)) return int64_t{0};
  ASSIGN_OR_RETURN(std::string name, ReadTextFile(latest.string()));
  while (!name.empty() && (name.back() == '\n' || name.back() == '\r')) name.pop_back();
  const fs::path folder = fs::path(dir) / name;
  const std::string where = "training checkpoint " + folder.string();
  ASSIGN_OR_RETURN(std::string state_text, ReadTextFile((folder / kStateFile).string()));
  nlohmann::json state = nlohmann::json::parse(state_text, nullptr, /*allow_exceptions=*/false);
  if (state.is_discarded() || !state.contains("run") || !state.contains("step") || !state.contains("losses")) {
    return DataLossError(where + ": " + kStateFile + " is not a training state");
  }
  for (const auto& [key, value] : identity.items()) {
    if (state["run"].value(key, nlohmann::json()) != value) {
      return FailedPreconditionError(where + " is of another run: its " + key + " is " + state["run"][key].dump() +
                                     ", this run's " + value.dump() + " (use another checkpoint folder)");
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> weights, SafetensorsFile::Open((folder / kWeightsFile).string()));
  ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> moments, SafetensorsFile::Open((folder / optimizer.file).string()));
  torch::NoGradGuard no_grad;
  auto load = [&](const SafetensorsFile& file, const std::string& name, torch::Tensor& into) -> Status {
    ASSIGN_OR_RETURN(torch::Tensor loaded, file.LoadAs(name, into.scalar_type(), into.device()));
    if (!loaded.sizes().equals(into.sizes())) return DataLossError(where + ": " + name + " has another shape");
    into.copy_(loaded);
    return OkStatus();
  };
  for (size_t i = 0; i < t.params.size(); ++i) RETURN_IF_ERROR(load(*weights, t.names[i], t.params[i]));
  for (auto& [moment, tensor] : optimizer.Moments(t)) RETURN_IF_ERROR(load(*moments, moment, tensor));
  optimizer.adamw().set_steps(state.value("optimizer_steps", int64_t{0}));
  *losses = state["losses"].get<std::vector<double>>();
  return state["step"].get<int64_t>();
}

// The global L2 norm of the gradients, and each scaled by min(1, max_norm / (norm + 1e-6)) as
// torch.nn.utils.clip_grad_norm_ does.
double ClipGradients(std::vector<torch::Tensor>& grads, double max_norm) {
  std::vector<torch::Tensor> norms;
  for (const torch::Tensor& g : grads) norms.push_back(g.norm(2));
  const double total = torch::stack(norms).norm(2).item<double>();
  if (max_norm > 0) {
    const double coef = std::min(1.0, max_norm / (total + 1e-6));
    for (torch::Tensor& g : grads) g.mul_(coef);
  }
  return total;
}

// libtorch 2.4 replaced autocast's per-backend setters (set_autocast_gpu_dtype, set_enabled, ...)
// with ones taking the device type; the old ones are deprecated in the CUDA libtorch 2.x that a GPU
// machine builds with, the new ones absent from Debian's 1.13.
void SetAutocast(torch::DeviceType device_type, torch::ScalarType dtype, bool enabled) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
  if (enabled) at::autocast::set_autocast_dtype(device_type, dtype);
  at::autocast::set_autocast_enabled(device_type, enabled);
#else
  if (device_type == torch::kCUDA) {
    if (enabled) at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(enabled);
  } else {
    if (enabled) at::autocast::set_autocast_cpu_dtype(dtype);
    at::autocast::set_cpu_enabled(enabled);
  }
#endif
}

// Autocast for the forward pass (the backward follows the recorded dtypes): with bfloat16, matrix
// products run in bfloat16 on bfloat16 copies of the float32 master weights, made per use and
// cached for the forward (at::autocast), as torch.autocast does; float32 leaves everything as is.
class ComputeDtypeGuard {
 public:
  ComputeDtypeGuard(torch::ScalarType dtype, const torch::Device& device)
      : on_(dtype != torch::kFloat32), device_type_(device.is_cuda() ? torch::kCUDA : torch::kCPU), dtype_(dtype) {
    if (on_) SetAutocast(device_type_, dtype_, /*enabled=*/true);
  }
  ~ComputeDtypeGuard() {
    if (!on_) return;
    SetAutocast(device_type_, dtype_, /*enabled=*/false);
    at::autocast::clear_cache();
  }
  ComputeDtypeGuard(const ComputeDtypeGuard&) = delete;
  ComputeDtypeGuard& operator=(const ComputeDtypeGuard&) = delete;

 private:
  const bool on_;
  const torch::DeviceType device_type_;
  const torch::ScalarType dtype_;
};

Status CheckOptions(const LlamaModel& model, const TrainingData& data, const RecoveryTrainingOptions& o) {
  if (o.phases.empty()) return InvalidArgumentError("training: no phase (e.g. masked:450,unmasked:50)");
  if (o.batch_size < 1) return InvalidArgumentError("training: the batch must be at least 1 sequence");
  const int64_t members = o.gang == nullptr ? 1 : o.gang->world_size();
  if (o.batch_size % members != 0) {
    return InvalidArgumentError("training: the batch (" + std::to_string(o.batch_size) + ") must divide among the gang's " +
                                std::to_string(members) + " members");
  }
  const int64_t share = o.batch_size / members;
  const int64_t micro = o.micro_batch == 0 ? share : o.micro_batch;
  if (micro < 1 || share % micro != 0) {
    return InvalidArgumentError("training: the micro-batch (" + std::to_string(micro) + ") must divide the batch (" +
                                std::to_string(o.batch_size) + ") per member (" + std::to_string(share) + ")");
  }
  if (o.schedule != "constant" && o.schedule != "cosine") {
    return InvalidArgumentError("training: schedule must be constant or cosine, got '" + o.schedule + "'");
  }
  if (!(o.learning_rate > 0) || o.warmup_steps < 0) {
    return InvalidArgumentError("training: the learning rate must be positive and the warm-up at least 0 steps");
  }
  if (o.checkpoint_every > 0 && o.checkpoint_dir.empty()) {
    return InvalidArgumentError("training: checkpoints every " + std::to_string(o.checkpoint_every) +
                                " steps need a checkpoint folder");
  }
  if (o.compute_dtype != torch::kFloat32 && o.compute_dtype != torch::kBFloat16) {
    return InvalidArgumentError("training: compute in float32 or bfloat16, not " + std::string(c10::toString(o.compute_dtype)));
  }
  if (model.options().dtype != torch::kFloat32) {
    return InvalidArgumentError("training: the model must be loaded in float32 (the master weights)");
  }
  if (!data.sequences.defined() || data.sequences.size(0) == 0) return InvalidArgumentError("training: no training sequence");
  if (data.seq_len > model.config().max_position_embeddings) {
    return InvalidArgumentError("training: sequences of " + std::to_string(data.seq_len) + " tokens exceed the model's " +
                                std::to_string(model.config().max_position_embeddings) + " positions");
  }
  return OkStatus();
}

}  // namespace

std::map<std::string, torch::Tensor> PruningMasksFromZeros(const LlamaModel& model) {
  std::map<std::string, torch::Tensor> masks;
  for (const auto& [name, weight] : model.NamedWeights()) {
    if (!IsLinearWeight(name)) continue;
    torch::Tensor kept = weight.ne(0);
    if (!kept.all().item<bool>()) masks.emplace(name, std::move(kept));
  }
  return masks;
}

StatusOr<TrainingReport> TrainRecovery(LlamaModel& model, const TrainingData& data,
                                       const std::map<std::string, torch::Tensor>& masks,
                                       const RecoveryTrainingOptions& options) {
  RETURN_IF_ERROR(CheckOptions(model, data, options));
  Trainable t;
  for (auto& [name, weight] : model.NamedWeights()) {
    auto mask = masks.find(name);
    if (mask != masks.end() && !mask->second.sizes().equals(weight.sizes())) {
      return InvalidArgumentError("training: the mask of " + name + " has another shape than the weight");
    }
    t.names.push_back(name);
    t.params.push_back(weight);
    t.masks.push_back(mask == masks.end() ? torch::Tensor() : mask->second.to(weight.device()));
  }
  for (const auto& [name, mask] : masks) {
    if (std::find(t.names.begin(), t.names.end(), name) == t.names.end()) {
      return InvalidArgumentError("training: a mask names " + name + ", which the model does not have");
    }
  }
  Gang* const gang = options.gang;
  OptimizerState optimizer;
  if (gang != nullptr && options.shard_optimizer) {
    optimizer.sharded = std::make_unique<ShardedAdamW>(t.params, options.adamw, gang);
    optimizer.file = "optimizer-rank-" + std::to_string(gang->rank()) + "-of-" + std::to_string(gang->world_size()) +
                     ".safetensors";
  } else {
    optimizer.replicated = std::make_unique<AdamW>(t.params, options.adamw);
    optimizer.file = kOptimizerFile;
    optimizer.writes = gang == nullptr || gang->rank() == 0;
  }
  const nlohmann::json identity = TrainingRunIdentity(data, masks, options, gang == nullptr ? 1 : gang->world_size());
  TrainingReport report;
  report.steps_total = TotalSteps(options.phases);
  if (!options.checkpoint_dir.empty()) {
    ASSIGN_OR_RETURN(report.resumed_at, LoadCheckpoint(options.checkpoint_dir, t, optimizer, &report.losses, identity));
  }
  const int64_t members = gang == nullptr ? 1 : gang->world_size();
  const int64_t share = options.batch_size / members;
  const int64_t rows_begin = (gang == nullptr ? 0 : gang->rank()) * share;
  const int64_t micro = options.micro_batch == 0 ? share : options.micro_batch;
  // The sum of every weight, which members with identical weights hold identically.
  auto check_weights = [&](int64_t step) -> Status {
    if (gang == nullptr) return OkStatus();
    torch::NoGradGuard no_grad;
    double sum = 0;
    for (const torch::Tensor& p : t.params) sum += p.sum(torch::kFloat64).item<double>();
    return gang->CheckSame(sum, "the sum of the weights after step " + std::to_string(step));
  };
  const int64_t end = options.stop_after > 0 ? std::min(options.stop_after, report.steps_total) : report.steps_total;
  const auto t0 = std::chrono::steady_clock::now();
  for (torch::Tensor& p : t.params) p.requires_grad_(true);
  model.SetActivationCheckpointing(options.activation_checkpointing);
  auto apply_masks = [&](bool with_moments) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < t.params.size(); ++i) {
      if (!t.masks[i].defined()) continue;
      t.params[i].mul_(t.masks[i]);
      if (with_moments && optimizer.replicated) {
        optimizer.replicated->exp_avg()[i].mul_(t.masks[i]);
        optimizer.replicated->exp_avg_sq()[i].mul_(t.masks[i]);
      }
    }
    if (with_moments && optimizer.sharded) optimizer.sharded->MaskMoments(t.masks);
  };
  auto run = [&]() -> Status {
    for (int64_t step = report.resumed_at; step < end; ++step) {
      // Between steps only: a gang's members stop at different steps, and the ones still in a
      // collective end by its timeout.
      if (options.should_stop && options.should_stop()) {
        return CancelledError("training stopped before step " + std::to_string(step + 1) + " (the run was taken back)");
      }
      bool first = false;
      const TrainingPhase& phase = PhaseAt(options.phases, step, &first);
      // A masked phase starts (or resumes) with its pruned weights and their moments at 0.
      if (phase.masked && (first || step == report.resumed_at)) apply_masks(/*with_moments=*/true);
      for (torch::Tensor& p : t.params) {
        if (p.grad().defined()) p.mutable_grad().zero_();
      }
      double loss_sum = 0;
      for (int64_t begin = rows_begin; begin < rows_begin + share; begin += micro) {
        torch::Tensor batch = BatchSlice(data, step, options.batch_size, begin, begin + micro).to(model.options().device);
        const int64_t n = batch.size(1) - 1;
        torch::Tensor logits;
        {
          ComputeDtypeGuard compute(options.compute_dtype, model.options().device);
          logits = model.Logits(model.Forward(batch.slice(1, 0, n)));
        }
        // The loss in float32 whatever the compute dtype (a bfloat16 log-softmax over 32000 logits
        // would round the loss to 3 digits).
        logits = logits.to(torch::kFloat32);
        torch::Tensor loss = torch::nn::functional::cross_entropy(logits.reshape({-1, logits.size(-1)}),
                                                                  batch.slice(1, 1, n + 1).reshape({-1}));
        // Each micro-batch's weight in the global batch mean: every sequence has the same token count.
        const double weight = static_cast<double>(micro) / static_cast<double>(options.batch_size);
        (loss * weight).backward();
        loss_sum += loss.item<double>() * weight;
      }
      std::vector<torch::Tensor> grads;
      for (torch::Tensor& p : t.params) grads.push_back(p.grad());
      if (gang != nullptr) {
        // The loss rides with the gradients, one more float32 element in the last bucket (so a
        // gang's reported loss is rounded to float32: about 1e-7 relative).
        grads.push_back(torch::tensor({loss_sum}, torch::kFloat32));
        RETURN_IF_ERROR(gang->AllReduceSum(grads));
        loss_sum = grads.back().item<double>();
        grads.pop_back();
      }
      for (size_t i = 0; i < t.params.size(); ++i) {
        torch::Tensor& g = grads[i];
        if (phase.masked && t.masks[i].defined()) g.mul_(t.masks[i]);
      }
      ClipGradients(grads, options.clip_grad_norm);
      const double lr = LearningRateAt(options, step, report.steps_total);
      if (optimizer.sharded) {
        RETURN_IF_ERROR(optimizer.sharded->Step(grads, lr));
      } else {
        optimizer.replicated->Step(grads, lr);
      }
      if (phase.masked) apply_masks(/*with_moments=*/false);
      report.losses.push_back(loss_sum);
      report.tokens_trained += share * data.seq_len;
      if (options.on_step) options.on_step(step, report.steps_total, loss_sum);
      if (options.weights_check_every > 0 && (step + 1) % options.weights_check_every == 0) {
        RETURN_IF_ERROR(check_weights(step + 1));
      }
      if (options.checkpoint_every > 0 && (step + 1) % options.checkpoint_every == 0) {
        RETURN_IF_ERROR(SaveCheckpoint(options.checkpoint_dir, step + 1, t, optimizer, report.losses, identity, gang));
      }
    }
    return check_weights(end);
  };
  Status status = OkStatus();
  try {
    status = run();
  } catch (const std::exception& e) {
    status = StatusFromException(e, "training");  // out of memory, most likely
  }
  for (torch::Tensor& p : t.params) {
    p.requires_grad_(false);
    p.mutable_grad() = torch::Tensor();
  }
  model.SetActivationCheckpointing(false);
  RETURN_IF_ERROR(status);
  report.finished = end == report.steps_total;
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return report;
}

StatusOr<std::string> WriteTrainedModel(const LlamaModel& model, const std::string& source_dir,
                                        const std::string& out_dir, const nlohmann::json& record) {
  std::error_code ec;
  if (fs::exists(out_dir, ec) && !(fs::is_directory(out_dir, ec) && fs::is_empty(out_dir, ec))) {
    return FailedPreconditionError(out_dir + ": exists and is not an empty folder; the trained model goes to a new one");
  }
  const fs::path out = fs::path(out_dir).lexically_normal();
  const fs::path partial = out.parent_path() / (out.filename().string() + ".partial");
  fs::remove_all(partial, ec);
  std::vector<std::pair<std::string, torch::Tensor>> weights;
  for (const auto& [name, w] : model.NamedWeights()) weights.emplace_back(name, w.detach());
  RETURN_IF_ERROR(WriteCheckpoint(partial.string(), model.config(), weights));
  for (const char* name : kCheckpointSideFiles) {
    const fs::path from = fs::path(source_dir) / name;
    if (!fs::is_regular_file(from, ec)) continue;
    fs::copy_file(from, partial / name, fs::copy_options::overwrite_existing, ec);
    if (ec) return InternalError("cannot copy " + from.string() + " to " + partial.string() + ": " + ec.message());
  }
  if (!record.is_null()) RETURN_IF_ERROR(WriteTextFile((partial / kTrainingRecordFile).string(), record.dump(1) + "\n"));
  fs::remove(out, ec);  // an empty folder; rename needs it gone
  fs::rename(partial, out, ec);
  if (ec) return InternalError("cannot rename " + partial.string() + " to " + out.string() + ": " + ec.message());
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> written, Checkpoint::Open(out.string()));
  return written->Fingerprint();
}

StatusOr<std::optional<nlohmann::json>> ReadTrainingRecord(const std::string& dir) {
  const std::string path = (fs::path(dir) / kTrainingRecordFile).string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::optional<nlohmann::json>();
  // A round's record is a few KB (4 KB of losses at paper scale); anything huge is not one.
  ReadLimits limits;
  limits.max_bytes = 16 << 20;
  limits.regular_file_only = true;
  ASSIGN_OR_RETURN(const std::string text, ReadTextFile(path, limits));
  nlohmann::json record = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (record.is_discarded() || !record.is_object() || JsonNestedDeeperThan(record, kMaxJsonNesting)) {
    return InvalidArgumentError(path + ": not a training record (a JSON object)");
  }
  return std::optional<nlohmann::json>(std::move(record));
}

}  // namespace dtm
