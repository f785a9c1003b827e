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
#include "common/status.h"

namespace dtm::cli {

struct TrainOptions {
  std::string model_dir;
  std::string data;               // JSON lines with "text" (C4) or raw text, .gz accepted
  std::string data_format = "auto";
  std::string out_dir;            // must not exist or be empty
  std::string phases = "masked:450,unmasked:50";
  int64_t batch = 256;            // sequences per optimizer step
  int64_t micro_batch = 0;        // sequences per forward/backward; 0 = the batch
  int64_t seq_len = 2048;
  int64_t max_sequences = 0;      // packed sequences read at most; 0 = the whole file
  double learning_rate = 1e-4;
  int64_t warmup_steps = 0;
  std::string schedule = "constant";
  double weight_decay = 0.01;
  double clip_grad_norm = 1.0;
  uint64_t seed = 0;
  std::string checkpoint_dir;
  int64_t checkpoint_every = 0;
  int64_t stop_after = 0;         // end after this many steps in all, as if killed (tests and trials)
  // A gang member (one process of a data-parallel run, worker/engine/gang.h): every member is
  // started with the same flags but its rank; member 0 runs the rendezvous at `gang_master` and
  // alone writes --out (and the checkpoints' weights; --checkpoint-dir must be one shared folder).
  int gang_rank = 0;
  int gang_size = 1;
  std::string gang_master = "127.0.0.1:29500";  // HOST:PORT of member 0's store, as the others reach it
  std::string gang_bind = "127.0.0.1";          // this member's address for Gloo's connections
  int gang_timeout_seconds = 300;               // a collective or the rendezvous waiting longer fails
  bool shard_optimizer = false;                 // ZeRO-1 across the gang
  RuntimeOptions runtime;         // --device, --threads (the dtype is float32: the master weights)
};

Status TrainCommand(const TrainOptions& options);

}  // namespace dtm::cli
