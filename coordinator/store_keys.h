// The coordinator's keys in the Store (Redis): one place that fixes the layout, so that every key a
// coordinator reads or writes can be found from here.
//
//   dtm:v1:baseline:<task id>   BaselineShardOutput of one shard (protobuf bytes), content-addressed
//   dtm:v1:result:<task id>     EvalShardOutput of one (config, shard) (protobuf bytes), content-addressed
//   dtm:v1:job:<job id>         the Job record (protobuf bytes): spec, state, summary, progress
//   dtm:v1:job-results:<job id> the final GetResultsResponse of a finished job (protobuf bytes)
//   dtm:v1:models               hash "<model path>\t<dtype>" -> ModelInfo JSON, learnt from workers
//   dtm:v1:text-windows:<task id>  TextWindowsOutput of a job's ppl text (protobuf bytes), content-addressed
//   dtm:v1:calibration:<fingerprint>  a job's GPTQ CalibrationSet (protobuf bytes), content-addressed
//   dtm:v1:worker-results:<worker id>  list of the baseline:/result:/text-windows: keys that worker's results were
//                               stored under (may repeat a key), for PurgeWorkerResults
//
// A job's id is derived from its client_request_id (JobIdFor), so the job record's key is the
// idempotency key of SubmitJob: creating it with SETNX both creates the job and claims the id.
//
// A task id is the SHA-256 of everything that determines the task's result (ARCHITECTURE "Keys"):
// model fingerprint, probe-set fingerprint, n, completion length, dtype, canonical config, the
// calibration-set fingerprint (configs with gptq) and shard range; configs with llm-int8 carry a line
// that tells their ids from those of the implementation before bitsandbytes'. The same id means the
// same numbers, whoever computed them and whenever.
#pragma once

#include <cstdint>
#include <string>

#include "dtm/v1/common.pb.h"
#include "dtm/v1/worker_service.pb.h"

namespace dtm {

// A text-windows task's key: the model, dtype, the text's fingerprint (PplTextFingerprint) as
// probe_set_fingerprint, prefix_len 1 and completion_len window - 1; no config, no shard.
// A train task's key: the model and dtype, and as probe_set_fingerprint the run's fingerprint
// (TrainRunFingerprint); no config, no shard.
enum class TaskKindForKey { kBaseline, kEval, kTextWindows, kTrain };

// The content hash of a task: hex SHA-256 over a versioned, unambiguous text of the key. The
// calibration fingerprint is hashed only when set, so that the ids of every task without gptq are
// what they were before the field existed (their cached results stay found).
std::string TaskIdFor(TaskKindForKey kind, const dtm::v1::CacheKey& key);

// The key of one shard of a job: `base` (model, probes, n, completion, dtype and the job's
// calibration fingerprint) with `config` and [begin, end). The calibration fingerprint stays only
// when the config uses gptq; a baseline shard's config is "".
dtm::v1::CacheKey ShardKey(const dtm::v1::CacheKey& base, const std::string& config, uint32_t begin,
                           uint32_t end);

// The fingerprint of a job's ppl text: hex SHA-256 of the join mode ("rows" or "as-is") and the
// file's bytes.
std::string PplTextFingerprint(const std::string& join, const std::string& text);
// The fingerprint of a text's windows (TextWindowsOutput), the probe_set_fingerprint of its
// perplexity eval shards: hex SHA-256 of the window length and every token, under a domain of its
// own, so that no probe set's fingerprint (whose rows are greedy baselines, not ground truth) can
// equal it.
std::string PplWindowsFingerprint(uint32_t window, const dtm::v1::TextWindowsOutput& windows);

// The probe_set_fingerprint of the eval shards of a job with a reference of other weights
// (`reference:`): their rows are the reference's greedy completions of the probe set, which the
// probe file's fingerprint alone (the key of the model's own baseline) does not name. Hex SHA-256 of
// both fingerprints under a domain of its own, so that it equals no probe set's or text's.
// The fingerprint of a train job's run: hex SHA-256, under a domain of its own, of the job id (whose
// output folder it fills: two jobs never share one run) and every setting of `input` but the
// member's place in its gang (rank, rendezvous), so that a re-leased attempt is the same task.
std::string TrainRunFingerprint(const std::string& job_id, const dtm::v1::TrainInput& input);

std::string ReferenceBaselineFingerprint(const std::string& reference_model_fingerprint,
                                         const std::string& probe_set_fingerprint);

std::string BaselineStoreKey(const std::string& task_id);
std::string TextWindowsStoreKey(const std::string& task_id);
std::string ResultStoreKey(const std::string& task_id);
std::string TrainResultStoreKey(const std::string& task_id);
std::string JobStoreKey(const std::string& job_id);
std::string JobResultsStoreKey(const std::string& job_id);
std::string WorkerResultsStoreKey(const std::string& worker_id);
std::string CalibrationStoreKey(const std::string& fingerprint);

// "j-" and 20 hex digits of SHA-256 over the client request id: the same request id names the same
// job, whichever coordinator run receives it.
std::string JobIdFor(const std::string& client_request_id);
inline constexpr char kJobKeyPrefix[] = "dtm:v1:job:";
inline constexpr char kModelsStoreKey[] = "dtm:v1:models";

}  // namespace dtm
