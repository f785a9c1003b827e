#include "cli/train_command.h"

#include <chrono>
#include <iostream>

#include <nlohmann/json.hpp>

#include "cli/engine_support.h"
#include "worker/engine/training_run.h"

namespace dtm::cli {

Status TrainCommand(const TrainOptions& options) {
  const auto t0 = Clock::now();
  if (!options.runtime.dtype.empty() && options.runtime.dtype != "float32") {
    return InvalidArgumentError("--dtype: training keeps float32 master weights; got '" + options.runtime.dtype + "'");
  }
  ApplyThreads(options.runtime.threads);
  TrainingRunOptions run = options.run;
  run.device = options.runtime.device;
  run.on_step = [](int64_t step, int64_t total, double loss) {
    std::cerr << "\rdtmctl train: step " << step + 1 << "/" << total << " loss " << loss
              << (step + 1 == total ? "\n" : "") << std::flush;
  };
  run.log = [](const std::string& line) { std::cerr << "dtmctl train: " << line << std::endl; };
  ASSIGN_OR_RETURN(const TrainingRunResult r, RunTraining(run));
  const TrainingReport& report = r.report;
  nlohmann::json out = {{"model", run.model_dir},
                        {"model_fingerprint", r.model_fingerprint},
                        {"data", {{"path", run.data},
                                  {"documents", r.documents},
                                  {"tokens", r.data_tokens},
                                  {"sequences", r.sequences},
                                  {"seq_len", run.seq_len},
                                  {"fingerprint", r.data_fingerprint}}},
                        {"phases", run.phases},
                        {"masked_weights", r.masked_weights},
                        {"pruned_entries", r.pruned_entries},
                        {"steps", report.steps_total},
                        {"resumed_at", report.resumed_at},
                        {"finished", report.finished},
                        {"losses", report.losses},
                        {"tokens_trained", report.tokens_trained},
                        {"tokens_per_second", report.seconds > 0 ? report.tokens_trained / report.seconds : 0.0},
                        {"device", r.device},
                        {"gang_rank", run.rank},
                        {"gang_size", run.gang_size}};
  // Stopped early, or a member other than 0 (whose weights member 0 writes): no model.
  out["out"] = r.out_fingerprint.empty() ? nlohmann::json(nullptr) : nlohmann::json(run.out_dir);
  if (!r.out_fingerprint.empty()) out["out_fingerprint"] = r.out_fingerprint;
  if (!r.output_zeros.empty()) {
    nlohmann::json zeros = nlohmann::json::object();
    for (const TrainingRunResult::ComponentZeros& z : r.output_zeros) {
      zeros[z.component] = {{"zeros", z.zeros}, {"params", z.params}};
    }
    out["output_zeros"] = std::move(zeros);  // the written model's exact zeros per component
  }
  out["seconds"] = SecondsSince(t0);
  PrintJson(out);
  return OkStatus();
}

}  // namespace dtm::cli
