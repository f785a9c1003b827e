#include "cli/train_command.h"

#include <chrono>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/engine_support.h"
#include "common/host_port.h"
#include "worker/engine/gang.h"
#include "worker/engine/recovery_trainer.h"
#include "worker/engine/tokenizer.h"
#include "worker/engine/training_data.h"

namespace dtm::cli {

Status TrainCommand(const TrainOptions& options) {
  const auto t0 = Clock::now();
  // Every flag and the output folder before any weight loads.
  ASSIGN_OR_RETURN(std::vector<TrainingPhase> phases, ParseTrainingPhases(options.phases));
  const bool writes_model = options.gang_rank == 0;
  if (writes_model) RETURN_IF_ERROR(CheckOutDirIsFree(options.out_dir));
  GangOptions gang_options;
  if (options.gang_size > 1) {
    gang_options.rank = options.gang_rank;
    gang_options.world_size = options.gang_size;
    gang_options.bind_host = options.gang_bind;
    gang_options.timeout = std::chrono::seconds(options.gang_timeout_seconds);
    if (!SplitHostPort(options.gang_master, &gang_options.master_host, &gang_options.master_port) ||
        gang_options.master_port == 0) {
      return InvalidArgumentError("--gang-master: expected HOST:PORT with a port, got '" + options.gang_master + "'");
    }
    if (options.gang_rank < 0 || options.gang_rank >= options.gang_size) {
      return InvalidArgumentError("--gang-rank " + std::to_string(options.gang_rank) + " is not in [0, " +
                                  std::to_string(options.gang_size) + ")");
    }
  } else if (options.gang_rank != 0 || options.shard_optimizer) {
    return InvalidArgumentError("--gang-rank and --shard-optimizer need --gang-size of 2 or more");
  }
  if (!options.runtime.dtype.empty() && options.runtime.dtype != "float32") {
    return InvalidArgumentError("--dtype: training keeps float32 master weights; got '" + options.runtime.dtype + "'");
  }
  ApplyThreads(options.runtime.threads);
  ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer, Tokenizer::FromModelDir(options.model_dir));
  ASSIGN_OR_RETURN(std::unique_ptr<Checkpoint> source, Checkpoint::Open(options.model_dir));
  TrainingDataOptions data_options;
  data_options.path = options.data;
  data_options.format = options.data_format;
  data_options.seq_len = options.seq_len;
  data_options.max_sequences = options.max_sequences;
  data_options.seed = options.seed;
  ASSIGN_OR_RETURN(TrainingData data,
                   LoadTrainingData(data_options, *tokenizer, source->config().max_position_embeddings));
  std::cerr << "dtmctl train: " << data.sequences.size(0) << " sequences of " << data.seq_len << " tokens from "
            << data.documents << " documents of " << options.data << std::endl;

  RuntimeOptions runtime = options.runtime;
  runtime.dtype = "float32";
  ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(options.model_dir, runtime));
  ASSIGN_OR_RETURN(const std::string fingerprint_in, loaded.checkpoint->Fingerprint());
  const std::map<std::string, torch::Tensor> masks = PruningMasksFromZeros(*loaded.model);
  int64_t pruned = 0;
  for (const auto& [name, mask] : masks) pruned += mask.numel() - mask.sum().item<int64_t>();

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
  train.on_step = [](int64_t step, int64_t total, double loss) {
    std::cerr << "\rdtmctl train: step " << step + 1 << "/" << total << " loss " << loss
              << (step + 1 == total ? "\n" : "") << std::flush;
  };
  std::unique_ptr<Gang> gang;
  if (options.gang_size > 1) {
    std::cerr << "dtmctl train: joining the gang as member " << options.gang_rank << " of " << options.gang_size
              << " at " << options.gang_master << std::endl;
    ASSIGN_OR_RETURN(gang, Gang::Join(gang_options));
    train.gang = gang.get();
    train.shard_optimizer = options.shard_optimizer;
  }
  ASSIGN_OR_RETURN(TrainingReport report, TrainRecovery(*loaded.model, data, masks, train));
  std::cerr << std::endl;

  nlohmann::json out = {{"model", options.model_dir},
                        {"model_fingerprint", fingerprint_in},
                        {"data", {{"path", options.data},
                                  {"documents", data.documents},
                                  {"tokens", data.tokens},
                                  {"sequences", data.sequences.size(0)},
                                  {"seq_len", data.seq_len},
                                  {"fingerprint", data.fingerprint}}},
                        {"phases", options.phases},
                        {"masked_weights", masks.size()},
                        {"pruned_entries", pruned},
                        {"steps", report.steps_total},
                        {"resumed_at", report.resumed_at},
                        {"finished", report.finished},
                        {"losses", report.losses},
                        {"tokens_trained", report.tokens_trained},
                        {"tokens_per_second", report.seconds > 0 ? report.tokens_trained / report.seconds : 0.0},
                        {"device", loaded.device.str()},
                        {"gang_rank", options.gang_rank},
                        {"gang_size", options.gang_size}};
  if (report.finished && writes_model) {
    ASSIGN_OR_RETURN(const std::string fingerprint, WriteTrainedModel(*loaded.model, options.model_dir, options.out_dir));
    out["out"] = options.out_dir;
    out["out_fingerprint"] = fingerprint;
  } else {
    // Stopped early (nothing is written that could pass for the trained model), or a member other
    // than 0, whose weights member 0 writes.
    out["out"] = nullptr;
  }
  out["seconds"] = SecondsSince(t0);
  PrintJson(out);
  return OkStatus();
}

}  // namespace dtm::cli
