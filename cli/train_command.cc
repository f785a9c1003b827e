#include "cli/train_command.h"

#include <chrono>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/engine_support.h"
#include "common/host_port.h"
#include "worker/engine/training_run.h"

namespace dtm::cli {

Status TrainCommand(const TrainOptions& options) {
  const auto t0 = Clock::now();
  if (!options.runtime.dtype.empty() && options.runtime.dtype != "float32") {
    return InvalidArgumentError("--dtype: training keeps float32 master weights; got '" + options.runtime.dtype + "'");
  }
  // The gang flags by their names (the engine checks the same settings, naming no flag).
  if (options.gang_size > 1) {
    std::string host;
    int port = 0;
    if (!SplitHostPort(options.gang_master, &host, &port) || port == 0) {
      return InvalidArgumentError("--gang-master: expected HOST:PORT with a port, got '" + options.gang_master + "'");
    }
    if (options.gang_rank < 0 || options.gang_rank >= options.gang_size) {
      return InvalidArgumentError("--gang-rank " + std::to_string(options.gang_rank) + " is not in [0, " +
                                  std::to_string(options.gang_size) + ")");
    }
  } else if (options.gang_rank != 0 || options.shard_optimizer) {
    return InvalidArgumentError("--gang-rank and --shard-optimizer need --gang-size of 2 or more");
  }
  ApplyThreads(options.runtime.threads);
  TrainingRunOptions run;
  run.model_dir = options.model_dir;
  run.data = options.data;
  run.data_format = options.data_format;
  run.out_dir = options.out_dir;
  run.phases = options.phases;
  run.batch = options.batch;
  run.micro_batch = options.micro_batch;
  run.seq_len = options.seq_len;
  run.max_sequences = options.max_sequences;
  run.learning_rate = options.learning_rate;
  run.warmup_steps = options.warmup_steps;
  run.schedule = options.schedule;
  run.weight_decay = options.weight_decay;
  run.clip_grad_norm = options.clip_grad_norm;
  run.seed = options.seed;
  run.checkpoint_dir = options.checkpoint_dir;
  run.checkpoint_every = options.checkpoint_every;
  run.stop_after = options.stop_after;
  run.device = options.runtime.device;
  run.rank = options.gang_rank;
  run.gang_size = options.gang_size;
  run.master = options.gang_master;
  run.bind_host = options.gang_bind;
  run.timeout_seconds = options.gang_timeout_seconds;
  run.shard_optimizer = options.shard_optimizer;
  run.on_step = [](int64_t step, int64_t total, double loss) {
    std::cerr << "\rdtmctl train: step " << step + 1 << "/" << total << " loss " << loss
              << (step + 1 == total ? "\n" : "") << std::flush;
  };
  run.log = [](const std::string& line) { std::cerr << "dtmctl train: " << line << std::endl; };
  ASSIGN_OR_RETURN(const TrainingRunResult r, RunTraining(run));
  const TrainingReport& report = r.report;
  nlohmann::json out = {{"model", options.model_dir},
                        {"model_fingerprint", r.model_fingerprint},
                        {"data", {{"path", options.data},
                                  {"documents", r.documents},
                                  {"tokens", r.data_tokens},
                                  {"sequences", r.sequences},
                                  {"seq_len", options.seq_len},
                                  {"fingerprint", r.data_fingerprint}}},
                        {"phases", options.phases},
                        {"masked_weights", r.masked_weights},
                        {"pruned_entries", r.pruned_entries},
                        {"steps", report.steps_total},
                        {"resumed_at", report.resumed_at},
                        {"finished", report.finished},
                        {"losses", report.losses},
                        {"tokens_trained", report.tokens_trained},
                        {"tokens_per_second", report.seconds > 0 ? report.tokens_trained / report.seconds : 0.0},
                        {"device", r.device},
                        {"gang_rank", options.gang_rank},
                        {"gang_size", options.gang_size}};
  // Stopped early, or a member other than 0 (whose weights member 0 writes): no model.
  out["out"] = r.out_fingerprint.empty() ? nlohmann::json(nullptr) : nlohmann::json(options.out_dir);
  if (!r.out_fingerprint.empty()) out["out_fingerprint"] = r.out_fingerprint;
  out["seconds"] = SecondsSince(t0);
  PrintJson(out);
  return OkStatus();
}

}  // namespace dtm::cli
