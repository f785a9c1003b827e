// Recovery training (SPEC "Recovery training", the paper's Sec. 4.2 after AC/DC): causal-LM
// training of a loaded replica on packed sequences (training_data.h), next-token cross-entropy,
// AdamW (adamw.h), in phases that do or do not hold the round's pruning masks.
//
// A step: the global batch (BatchSlice of the step) in micro-batches whose gradients accumulate to
// the batch mean; in a masked phase the pruned entries of every gradient are zeroed before
// clipping, so their moments stay 0 and AdamW leaves them where the masks put them: 0 (they are
// zeroed again after the step, and each masked phase begins by zeroing the pruned weights and
// their moments). An unmasked phase trains every weight.
//
// Resumable: every `checkpoint_every` steps the weights, AdamW's moments, the step and the loss so
// far go to `checkpoint_dir` (a folder per step, written whole under a temporary name and renamed;
// `latest` names the newest), and a run started on a folder that holds a checkpoint of the same
// run (same data, masks and settings) continues from it, ending with the weights an uninterrupted
// run ends with. The batch of a step is a function of the step alone, and the model has no
// dropout, so no random state needs saving.
//
// Memory at paper scale (Llama-2-7B, fp32 master weights, one process): weights 27 GB, gradients
// 27 GB, AdamW's two moments 54 GB, plus the activations of one micro-batch: more than one 80 GB
// GPU holds, hence the optimizer state sharded across a data-parallel gang (ZeRO-1, shard_optimizer;
// bench/train_bench prints what that leaves per GPU).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/status.h"
#include "common/training_phases.h"
#include "worker/engine/adamw.h"
#include "worker/engine/gang.h"
#include "worker/engine/llama_model.h"
#include "worker/engine/training_data.h"

namespace dtm {

struct RecoveryTrainingOptions {
  std::vector<TrainingPhase> phases;
  int64_t batch_size = 256;  // sequences per optimizer step: the global batch (the paper: 256 x 2048 tokens)
  int64_t micro_batch = 0;   // sequences per forward and backward (gradient accumulation); 0 = this member's whole share
  double learning_rate = 1e-4;
  int64_t warmup_steps = 0;          // linear warm-up from lr / warmup_steps
  std::string schedule = "constant";  // after warm-up: "constant", or "cosine" down to a tenth of the peak at the last step
  AdamWOptions adamw;
  double clip_grad_norm = 1.0;  // global L2 norm of the gradients at most this; 0 = no clipping
  int64_t checkpoint_every = 0;  // steps between training checkpoints; 0 = none
  std::string checkpoint_dir;    // where they go (created); required when checkpoint_every > 0
  int64_t stop_after = 0;        // stop after this many steps in all, as an interrupted run would; 0 = run every phase
  std::function<void(int64_t step, int64_t total, double loss)> on_step;  // after each step; may be empty
  std::function<bool()> should_stop;
  bool activation_checkpointing = false;  // per decoder layer (LlamaModel::SetActivationCheckpointing); same gradients
  // The forward's matrix products: float32, or bfloat16 (autocast) on the float32 master weights,
  // the usual choice on GPUs (and what the memory plan assumes); gradients and AdamW stay float32.
  torch::ScalarType compute_dtype = torch::kFloat32;  // asked before each step; true ends the run CANCELLED (may be empty)
  // Data-parallel: this member's gang (not owned; null = one process). Member r of W takes rows
  // [r B/W, (r+1) B/W) of every global batch; the gradients and the loss are summed across the gang
  // (each micro-batch weighted by its share of the global batch), so every member takes the step one
  // process would take, up to the order of float sums. Member 0 alone writes checkpoints (to a
  // folder every member reads when resuming).
  Gang* gang = nullptr;
  // With a gang: AdamW's moments sharded across it (ZeRO-1, sharded_adamw.h), 8P/W bytes a member
  // instead of 8P; each member checkpoints its own range, so such a checkpoint resumes on a gang of
  // the same size.
  bool shard_optimizer = false;
  int64_t weights_check_every = 50;  // steps between the gang's check that its weights are identical (and at the end)
};

struct TrainingReport {
  std::vector<double> losses;  // per step from the run's first (resumed runs included): the batch's mean token loss
  int64_t steps_total = 0;     // of every phase
  int64_t resumed_at = 0;      // the step the run continued from (0: a fresh start)
  bool finished = false;       // false when stop_after ended it early
  int64_t tokens_trained = 0;  // input tokens of the steps this process ran
  double seconds = 0;          // of the steps this process ran
};

// Pruning masks of a model: for every linear component weight (q, k, v, o, gate, up, down of each
// layer) holding at least one exact 0, a bool tensor, true where the weight is not 0. A round's
// magnitude pruning leaves its pruned entries at exactly 0, so these are its masks.
std::map<std::string, torch::Tensor> PruningMasksFromZeros(const LlamaModel& model);

// Trains `model` in place (its dtype must be float32: the master weights) on `data`. `masks` are
// keyed by HF weight name (PruningMasksFromZeros). Errors: INVALID_ARGUMENT for options that
// cannot work (no phase, batch < 1, a batch the gang's members and micro-batches do not divide, a
// mask of another shape); a checkpoint of another run in checkpoint_dir is FAILED_PRECONDITION
// naming what differs; a gang member gone is UNAVAILABLE, weights that drifted apart
// FAILED_PRECONDITION.
StatusOr<TrainingReport> TrainRecovery(LlamaModel& model, const TrainingData& data,
                                       const std::map<std::string, torch::Tensor>& masks,
                                       const RecoveryTrainingOptions& options);

// Everything that decides the numbers of a run: the data, the masks and every setting but where and
// how often it checkpoints (and `gang_size`, which matters only to a sharded optimizer's files). A
// checkpoint resumes, and a trained model folder is adopted, only by the run its identity names.
nlohmann::json TrainingRunIdentity(const TrainingData& data, const std::map<std::string, torch::Tensor>& masks,
                                   const RecoveryTrainingOptions& options, int gang_size);

// The file in a trained model's folder that says which run wrote it (`record`, given to
// WriteTrainedModel) and what it reported; a model folder without it was not written by a run.
inline constexpr char kTrainingRecordFile[] = "dtm-training.json";

// Writes the trained model as an HF checkpoint folder `out_dir`, with the tokenizer and other side
// files of `source_dir` (the model it started from) and `record` as kTrainingRecordFile (unless
// null), and returns its fingerprint. The folder must not exist or be empty (FAILED_PRECONDITION
// otherwise: it could be an earlier model); the files go to a sibling folder OUT.partial first,
// renamed to `out_dir` when complete, so that no later job can mistake a half-written folder for a
// model, and a folder with a record is always a whole one.
StatusOr<std::string> WriteTrainedModel(const LlamaModel& model, const std::string& source_dir,
                                        const std::string& out_dir, const nlohmann::json& record = nullptr);

// The record of a model folder that holds one: nullopt when the folder has none (or does not
// exist), INVALID_ARGUMENT when the record is not JSON.
StatusOr<std::optional<nlohmann::json>> ReadTrainingRecord(const std::string& dir);

}  // namespace dtm
