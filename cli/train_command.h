// `dtmctl train --model M --data FILE --out DIR`: recovery training in one process, or as one member
// of a data-parallel gang with --gang-rank/--gang-size/--gang-master (SPEC "Recovery
// training"): the model's pruned weights (its exact zeros) are the masks of the masked phases, the
// data is packed as worker/engine/training_data.h packs it, and the trained model is written as a
// new HF checkpoint folder. With --checkpoint-dir, a run killed and started again with the same
// flags continues from its last checkpoint and ends with the weights of an uninterrupted run.
//
// Cost at paper scale (the paper's round: 500 steps of 256 x 2048 tokens on Llama-2-13B): about
// 6 x 13e9 x 262e6 = 2e19 FLOPs per round, some 30 A100-hours at half the bf16 peak (estimated),
// and more memory than one process can hold (recovery_trainer.h): a gang's work, not this command's.
#pragma once

#include <cstdint>
#include <string>

#include "cli/engine_commands.h"
#include "worker/engine/training_run.h"
#include "common/status.h"

namespace dtm::cli {

struct TrainOptions {
  // Every setting of the run (worker/engine/training_run.h), as the flags set them; its device is
  // --device's and its callbacks are the command's.
  TrainingRunOptions run;
  RuntimeOptions runtime;         // --device, --threads (the dtype is float32: the master weights)
};

Status TrainCommand(const TrainOptions& options);

}  // namespace dtm::cli
