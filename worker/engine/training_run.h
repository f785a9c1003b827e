// One member's whole recovery-training run from files to files, as `dtmctl train` and a worker's
// train task both run it: open the model and its tokenizer, pack the data, prune it by magnitude
// when asked (a sparsification round's targets), take the masks from the model's exact zeros, join
// the gang, train (resuming from checkpoint_dir when it holds this run's
// checkpoint) and, as member 0, write the trained model.
//
// Memory at paper scale: the model in float32 plus its gradients and AdamW's moments (or their
// shard), recovery_trainer.h and training_memory.h; the packed data is 4 bytes a token (1 GB for a
// round of 256 x 2048 x 500 tokens), held by every member.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"
#include "worker/engine/recovery_trainer.h"

namespace dtm {

struct TrainingRunOptions {
  std::string model_dir;
  std::string data;                // JSON lines with "text" (C4) or raw text, .gz accepted
  std::string data_format = "auto";
  std::string out_dir;             // member 0 writes the trained model here; must not exist or be empty
  // "COMPONENT=prune:F,...": magnitude-prune the loaded model first (each member alike: the same
  // weights give the same masks), so the masks are the model's zeros then. "" = the zeros as stored.
  std::string prune;
  // After the last step, set the masked weights to 0 again before writing (SPEC "Sparsification
  // run": the last round's unmasked phase lets them move; the output must have exactly the target
  // sparsity).
  bool remask = false;
  std::string phases = "masked:450,unmasked:50";
  int64_t batch = 256;             // sequences per optimizer step, over the gang
  int64_t micro_batch = 0;         // sequences per forward/backward; 0 = the member's share
  int64_t seq_len = 2048;
  int64_t max_sequences = 0;       // packed sequences read at most; 0 = the whole file
  double learning_rate = 1e-4;
  int64_t warmup_steps = 0;
  std::string schedule = "constant";
  double weight_decay = 0.01;
  double clip_grad_norm = 1.0;
  uint64_t seed = 0;
  std::string checkpoint_dir;      // "" = no checkpoints (a killed run starts over)
  int64_t checkpoint_every = 0;
  int64_t stop_after = 0;          // end after this many steps in all, as if killed
  std::string device = "cpu";
  // The gang (gang.h); size 1 = one process. Member 0 runs the rendezvous store at `master`.
  int rank = 0;
  int gang_size = 1;
  std::string master = "127.0.0.1:29500";  // HOST:PORT
  std::string bind_host = "127.0.0.1";
  int timeout_seconds = 300;
  bool shard_optimizer = false;
  bool activation_checkpointing = false;  // per decoder layer: less memory, a third more compute
  // The forward's compute: "float32", "bfloat16" (autocast on the float32 master weights), or ""
  // for the device's usual one: bfloat16 on a GPU, float32 on a CPU.
  std::string compute_dtype;
  // Progress and cancellation (RecoveryTrainingOptions); `log` gets a line at each milestone.
  std::function<void(int64_t step, int64_t total, double loss)> on_step;
  std::function<bool()> should_stop;
  std::function<void(const std::string&)> log;
};

struct TrainingRunResult {
  TrainingReport report;
  std::string model_fingerprint;   // of model_dir
  std::string data_fingerprint;    // training_data.h
  int64_t documents = 0;
  int64_t data_tokens = 0;
  int64_t sequences = 0;
  int64_t masked_weights = 0;      // weight matrices with a mask
  int64_t pruned_entries = 0;      // entries the masks hold at 0
  std::string out_fingerprint;     // set when this member wrote out_dir (member 0 of a finished run)
  // With out_fingerprint: every linear component's exact zeros in the written model, and its size.
  struct ComponentZeros {
    std::string component;
    int64_t zeros = 0;
    int64_t params = 0;
  };
  std::vector<ComponentZeros> output_zeros;
  std::string device;
};

// INVALID_ARGUMENT for bad settings or data (naming the flag or file), FAILED_PRECONDITION for an
// output folder that is not free (checked before anything loads) or a checkpoint of another run,
// UNAVAILABLE when a gang member is gone or the rendezvous times out, CANCELLED when should_stop
// said so.
StatusOr<TrainingRunResult> RunTraining(const TrainingRunOptions& options);

}  // namespace dtm
