#include "worker/engine/training_run.h"

#include <chrono>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/compression_config.h"
#include "common/host_port.h"
#include "worker/engine/checkpoint.h"
#include "worker/engine/compression.h"
#include "worker/engine/gang.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/tensor_util.h"
#include "worker/engine/tokenizer.h"
#include "worker/engine/training_data.h"

namespace dtm {
namespace {

// SPEC "Sparsification run": a round prunes the current model by magnitude to each component's new
// target, then trains it under those masks.
void PruneByMagnitude(const CompressionConfig& targets, LlamaModel& model) {
  torch::NoGradGuard no_grad;
  for (const auto& [id, method] : targets.entries) {
    torch::Tensor& weight = model.ComponentWeight(id);
    weight.copy_(MagnitudePrune(weight, method.fraction).to(weight.device()));
  }
}

// The component of a linear weight's name (an attention or MLP projection), "" for any other.
std::string LinearComponentOf(const std::string& weight_name) {
  const std::string suffix = ".weight";
  const bool linear =
      weight_name.find(".self_attn.") != std::string::npos || weight_name.find(".mlp.") != std::string::npos;
  if (!linear || weight_name.size() <= suffix.size() ||
      weight_name.compare(weight_name.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return "";
  }
  return weight_name.substr(0, weight_name.size() - suffix.size());
}

// The exact zeros of every linear component weight of `model`, in its weights' order.
std::vector<TrainingRunResult::ComponentZeros> ComponentZerosOf(const LlamaModel& model) {
  std::vector<TrainingRunResult::ComponentZeros> out;
  for (const auto& [name, weight] : model.NamedWeights()) {
    const std::string component = LinearComponentOf(name);
    if (!component.empty()) out.push_back({component, weight.eq(0).sum().item<int64_t>(), weight.numel()});
  }
  return out;
}

// The same of a model folder, one tensor in memory at a time.
StatusOr<std::vector<TrainingRunResult::ComponentZeros>> ComponentZerosOf(const Checkpoint& checkpoint) {
  std::vector<TrainingRunResult::ComponentZeros> out;
  for (const auto& [name, shape] : ExpectedLlamaTensors(checkpoint.config())) {
    const std::string component = LinearComponentOf(name);
    if (component.empty()) continue;
    ASSIGN_OR_RETURN(torch::Tensor weight, checkpoint.Load(name, shape, torch::kFloat32, torch::kCPU));
    out.push_back({component, weight.eq(0).sum().item<int64_t>(), weight.numel()});
  }
  return out;
}

// Which run wrote a trained model folder: its identity, the model it started from and whether the
// masks were put back; WriteTrainedModel stores it with the losses.
nlohmann::json OutputRecord(const nlohmann::json& identity, const std::string& model_fingerprint, bool remask) {
  return {{"run", identity}, {"model", model_fingerprint}, {"remask", remask}};
}

// An earlier attempt of this run that finished and wrote the model but could not report it (its
// coordinator was killed, and the new one started the run again): its folder is this run's result.
// A folder of another run is refused naming what differs.
StatusOr<TrainingRunResult> AdoptEarlierOutput(const nlohmann::json& record, const nlohmann::json& wanted,
                                               const TrainingRunOptions& options, TrainingRunResult result) {
  const std::string& dir = options.out_dir;
  const std::string where = "output " + dir + " (" + kTrainingRecordFile + ")";
  for (const char* part : {"model", "remask", "run"}) {
    if (!record.contains(part)) return InvalidArgumentError(where + ": no \"" + part + "\"");
    if (record[part] == wanted[part]) continue;
    if (record[part].is_object() && wanted[part].is_object()) {
      for (const auto& [key, value] : wanted[part].items()) {
        if (record[part].contains(key) && record[part][key] == value) continue;
        return FailedPreconditionError(where + " holds the model of another run: its " + key + " is " +
                                       (record[part].contains(key) ? record[part][key].dump() : "missing") +
                                       ", this run's is " + value.dump() + " (choose a new or empty folder)");
      }
    }
    return FailedPreconditionError(where + " holds the model of another run: its " + part + " is " +
                                   record[part].dump() + ", this run's is " + wanted[part].dump() +
                                   " (choose a new or empty folder)");
  }
  const nlohmann::json& losses = record.contains("losses") ? record["losses"] : nlohmann::json();
  if (!losses.is_array() || !record.contains("steps") || !record["steps"].is_number_integer() ||
      record["steps"].get<int64_t>() != static_cast<int64_t>(losses.size())) {
    return InvalidArgumentError(where + ": expected \"steps\" and as many \"losses\"");
  }
  TrainingReport& report = result.report;
  report.losses.clear();
  for (const nlohmann::json& loss : losses) {
    if (!loss.is_number()) return InvalidArgumentError(where + ": a loss that is not a number: " + loss.dump());
    report.losses.push_back(loss.get<double>());
  }
  report.steps_total = record["steps"].get<int64_t>();
  report.resumed_at = report.steps_total;  // nothing left to train
  report.finished = true;
  report.tokens_trained = 0;
  report.seconds = 0;
  if (options.rank == 0) {
    ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> written, Checkpoint::Open(dir));
    ASSIGN_OR_RETURN(result.out_fingerprint, written->Fingerprint());
    ASSIGN_OR_RETURN(result.output_zeros, ComponentZerosOf(*written));
  }
  if (options.log) options.log("output " + dir + " already holds this run's trained model (an earlier attempt wrote it): adopted");
  return result;
}

}  // namespace

StatusOr<TrainingRunResult> RunTraining(const TrainingRunOptions& options) {
  auto log = [&options](const std::string& line) {
    if (options.log) options.log(line);
  };
  // Every setting and the output folder before any weight loads.
  ASSIGN_OR_RETURN(std::vector<TrainingPhase> phases, ParseTrainingPhases(options.phases));
  const bool writes_model = options.rank == 0;
  // A folder with a run's record is adopted below if the run is this one (its identity needs the
  // data and the masks); any other folder that is not free fails now, before anything loads.
  std::optional<nlohmann::json> earlier;
  if (!options.out_dir.empty()) {
    ASSIGN_OR_RETURN(earlier, ReadTrainingRecord(options.out_dir));
  }
  if (writes_model && !earlier) RETURN_IF_ERROR(CheckOutputFolderIsFree(options.out_dir, "output"));
  // The messages name dtmctl train's flags; on a worker these settings come from the coordinator.
  GangOptions gang_options;
  if (options.gang_size > 1) {
    gang_options.rank = options.rank;
    gang_options.world_size = options.gang_size;
    gang_options.bind_host = options.bind_host;
    gang_options.timeout = std::chrono::seconds(options.timeout_seconds);
    if (!SplitHostPort(options.master, &gang_options.master_host, &gang_options.master_port) ||
        gang_options.master_port == 0) {
      return InvalidArgumentError("--gang-master: expected HOST:PORT with a port, got '" + options.master + "'");
    }
    if (options.rank < 0 || options.rank >= options.gang_size) {
      return InvalidArgumentError("--gang-rank " + std::to_string(options.rank) + " is not in [0, " +
                                  std::to_string(options.gang_size) + ")");
    }
  } else if (options.rank != 0 || options.shard_optimizer) {
    return InvalidArgumentError("--gang-rank and --shard-optimizer need --gang-size of 2 or more");
  }
  ASSIGN_OR_RETURN(torch::Device device, ParseDevice(options.device));
  const std::string compute = options.compute_dtype.empty() ? (device.is_cuda() ? "bfloat16" : "float32")
                                                            : options.compute_dtype;
  if (compute != "float32" && compute != "bfloat16") {
    return InvalidArgumentError("--compute-dtype: float32 or bfloat16, got '" + options.compute_dtype + "'");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromModelDir(options.model_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> checkpoint, Checkpoint::Open(options.model_dir));
  StatusOr<CompressionConfig> prune_targets =
      ParsePruneTargets(options.prune, static_cast<int>(checkpoint->config().num_hidden_layers));
  if (!prune_targets.ok()) return InvalidArgumentError("--prune: " + prune_targets.status().message());
  TrainingDataOptions data_options;
  data_options.path = options.data;
  data_options.format = options.data_format;
  data_options.seq_len = options.seq_len;
  data_options.max_sequences = options.max_sequences;
  data_options.seed = options.seed;
  ASSIGN_OR_RETURN(TrainingData data,
                   LoadTrainingData(data_options, *tokenizer, checkpoint->config().max_position_embeddings));
  log(std::to_string(data.sequences.size(0)) + " sequences of " + std::to_string(data.seq_len) + " tokens from " +
      std::to_string(data.documents) + " documents of " + options.data);

  TrainingRunResult result;
  result.documents = data.documents;
  result.data_tokens = data.tokens;
  result.sequences = data.sequences.size(0);
  result.data_fingerprint = data.fingerprint;
  result.device = device.str();
  ASSIGN_OR_RETURN(result.model_fingerprint, checkpoint->Fingerprint());
  // float32 whatever the device: these are the master weights.
  ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model, LlamaModel::Load(*checkpoint, ModelOptions{torch::kFloat32, device}));
  PruneByMagnitude(*prune_targets, *model);
  const std::map<std::string, torch::Tensor> masks = PruningMasksFromZeros(*model);
  result.masked_weights = static_cast<int64_t>(masks.size());
  for (const auto& [name, mask] : masks) result.pruned_entries += mask.numel() - mask.sum().item<int64_t>();

  RecoveryTrainingOptions train;
  train.phases = phases;
  train.batch_size = options.batch;
  train.micro_batch = options.micro_batch;
  train.learning_rate = options.learning_rate;
  train.warmup_steps = options.warmup_steps;
  train.schedule = options.schedule;
  train.adamw.weight_decay = options.weight_decay;
  train.clip_grad_norm = options.clip_grad_norm;
  train.checkpoint_dir = options.checkpoint_dir;
  train.checkpoint_every = options.checkpoint_every;
  train.stop_after = options.stop_after;
  train.on_step = options.on_step;
  train.should_stop = options.should_stop;
  train.activation_checkpointing = options.activation_checkpointing;
  train.compute_dtype = compute == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  const nlohmann::json record =
      OutputRecord(TrainingRunIdentity(data, masks, train, options.gang_size), result.model_fingerprint, options.remask);
  // Every member sees the folder (shared storage): none joins the gang.
  if (earlier) return AdoptEarlierOutput(*earlier, record, options, std::move(result));
  std::unique_ptr<Gang> gang;
  if (options.gang_size > 1) {
    log("joining the gang as member " + std::to_string(options.rank) + " of " + std::to_string(options.gang_size) +
        " at " + options.master);
    gang_options.device = device;
    ASSIGN_OR_RETURN(gang, Gang::Join(gang_options));
    log("joined over " + gang->backend());
    train.gang = gang.get();
    train.shard_optimizer = options.shard_optimizer;
  }
  ASSIGN_OR_RETURN(result.report, TrainRecovery(*model, data, masks, train));
  if (result.report.finished && options.remask) {
    torch::NoGradGuard no_grad;
    for (auto& [name, weight] : model->NamedWeights()) {
      auto mask = masks.find(name);
      if (mask != masks.end()) weight.mul_(mask->second.to(weight.scalar_type()));
    }
  }
  // Stopped early, nothing is written that could pass for the trained model; the other members'
  // weights are member 0's.
  if (result.report.finished && writes_model) {
    // An attempt of this run its coordinator lost track of can finish while this one trains.
    ASSIGN_OR_RETURN(earlier, ReadTrainingRecord(options.out_dir));
    if (earlier) return AdoptEarlierOutput(*earlier, record, options, std::move(result));
    nlohmann::json written = record;
    written["steps"] = result.report.steps_total;
    written["losses"] = result.report.losses;
    ASSIGN_OR_RETURN(result.out_fingerprint, WriteTrainedModel(*model, options.model_dir, options.out_dir, written));
    result.output_zeros = ComponentZerosOf(*model);
    log("wrote " + options.out_dir + " (fingerprint " + result.out_fingerprint.substr(0, 12) + ")");
  }
  return result;
}

}  // namespace dtm
