#include "coordinator/store_keys.h"

#include <sstream>

#include "common/compression_config.h"
#include "common/sha256.h"

namespace dtm {
namespace {

// Whether a canonical config holds a component compressed with llm-int8 (a method without
// parameters, so "=llm-int8" ends the item).
bool HoldsLlmInt8(const std::string& canonical) {
  const std::string method = "=llm-int8";
  for (size_t at = canonical.find(method); at != std::string::npos; at = canonical.find(method, at + 1)) {
    const size_t end = at + method.size();
    if (end == canonical.size() || canonical[end] == ',') return true;
  }
  return false;
}

}  // namespace

std::string TaskIdFor(TaskKindForKey kind, const dtm::v1::CacheKey& key) {
  // One field per line, named: no two different keys can print the same text (a config holds no
  // newline; ParseCompressionConfig refuses one).
  std::string text = "dtm-task-v1\n";
  switch (kind) {
    case TaskKindForKey::kBaseline: text += "kind=baseline\n"; break;
    case TaskKindForKey::kEval: text += "kind=eval\n"; break;
    case TaskKindForKey::kTextWindows: text += "kind=text-windows\n"; break;
    case TaskKindForKey::kTrain: text += "kind=train\n"; break;
  }
  text += "model=" + key.model_fingerprint() + "\n";
  text += "probes=" + key.probe_set_fingerprint() + "\n";
  text += "prefix=" + std::to_string(key.prefix_len()) + "\n";
  text += "completion=" + std::to_string(key.completion_len()) + "\n";
  text += "dtype=" + dtm::v1::Dtype_Name(key.dtype()) + "\n";
  if (kind == TaskKindForKey::kEval) text += "config=" + key.config().canonical() + "\n";
  if (kind == TaskKindForKey::kEval && !key.calibration_fingerprint().empty()) {
    text += "calibration=" + key.calibration_fingerprint() + "\n";
  }
  // llm-int8 results stored before it followed bitsandbytes (whole-row weight int8, dequantized
  // outlier weight columns) and before ProbeResult carried outlier_columns are other numbers under the
  // same config string: this line gives such configs new ids and leaves every other id unchanged.
  if (kind == TaskKindForKey::kEval && HoldsLlmInt8(key.config().canonical())) text += "llm-int8=bitsandbytes\n";
  text += "shard=" + std::to_string(key.shard().begin()) + ":" + std::to_string(key.shard().end()) + "\n";
  Sha256 hash;
  hash.Update(text);
  return hash.HexDigest();
}

std::string PplTextFingerprint(const std::string& join, const std::string& text) {
  Sha256 hash;
  hash.Update("dtm-ppl-text-v1\njoin=" + join + "\n");
  hash.Update(text);
  return hash.HexDigest();
}

std::string PplWindowsFingerprint(uint32_t window, const dtm::v1::TextWindowsOutput& windows) {
  Sha256 hash;
  hash.Update("dtm-ppl-windows-v1\nwindow=" + std::to_string(window) + "\n");
  std::string line;
  for (const dtm::v1::TokenSequence& w : windows.windows()) {
    line.clear();
    for (uint32_t t : w.tokens()) line += std::to_string(t) + " ";
    line += "\n";
    hash.Update(line);
  }
  return hash.HexDigest();
}

std::string ReferenceBaselineFingerprint(const std::string& reference_model_fingerprint,
                                         const std::string& probe_set_fingerprint) {
  Sha256 hash;
  hash.Update("dtm-reference-baseline-v1\nreference=" + reference_model_fingerprint +
              "\nprobes=" + probe_set_fingerprint + "\n");
  return hash.HexDigest();
}

std::string TrainRunFingerprint(const std::string& job_id, const dtm::v1::TrainInput& in) {
  // Named fields, one a line, written out rather than serialized: protobuf's bytes are not
  // promised stable across versions, and a restarted coordinator must find its run's result.
  std::ostringstream text;
  text.precision(17);
  text << "dtm-train-run-v1\njob=" << job_id << "\ndata=" << in.data_path() << "\nformat=" << in.data_format()
       << "\noutput=" << in.output_dir() << "\ncheckpoints=" << in.checkpoint_dir() << "\nphases=" << in.phases()
       << "\nbatch=" << in.batch() << "\nmicro_batch=" << in.micro_batch() << "\nseq_len=" << in.seq_len()
       << "\nmax_sequences=" << in.max_sequences() << "\nlr=" << in.learning_rate() << "\nwarmup=" << in.warmup_steps()
       << "\nschedule=" << in.schedule() << "\nweight_decay=" << in.weight_decay() << "\nclip=" << in.clip_grad_norm()
       << "\nseed=" << in.seed() << "\ncheckpoint_every=" << in.checkpoint_every()
       << "\nshard_optimizer=" << in.shard_optimizer() << "\ngang_size=" << in.gang_size() << "\n";
  // Only when set, so that runs without them keep the fingerprints (and stored results) they had.
  if (!in.prune().empty()) text << "prune=" << in.prune() << "\n";
  if (in.remask()) text << "remask=1\n";
  Sha256 hash;
  hash.Update(text.str());
  return hash.HexDigest();
}

std::string BaselineStoreKey(const std::string& task_id) { return "dtm:v1:baseline:" + task_id; }
std::string TextWindowsStoreKey(const std::string& task_id) { return "dtm:v1:text-windows:" + task_id; }
std::string ResultStoreKey(const std::string& task_id) { return "dtm:v1:result:" + task_id; }
std::string TrainResultStoreKey(const std::string& task_id) { return "dtm:v1:train-result:" + task_id; }
std::string JobStoreKey(const std::string& job_id) { return kJobKeyPrefix + job_id; }
std::string JobResultsStoreKey(const std::string& job_id) { return "dtm:v1:job-results:" + job_id; }
std::string WorkerResultsStoreKey(const std::string& worker_id) { return "dtm:v1:worker-results:" + worker_id; }

std::string CalibrationStoreKey(const std::string& fingerprint) { return "dtm:v1:calibration:" + fingerprint; }

dtm::v1::CacheKey ShardKey(const dtm::v1::CacheKey& base, const std::string& config, uint32_t begin,
                           uint32_t end) {
  dtm::v1::CacheKey key = base;
  key.mutable_config()->set_canonical(config);
  if (!ConfigUsesGptq(config)) key.clear_calibration_fingerprint();
  key.mutable_shard()->set_begin(begin);
  key.mutable_shard()->set_end(end);
  return key;
}

std::string JobIdFor(const std::string& client_request_id) {
  Sha256 hash;
  hash.Update("dtm-job-v1\n" + client_request_id);
  return "j-" + hash.HexDigest().substr(0, 20);
}

}  // namespace dtm
