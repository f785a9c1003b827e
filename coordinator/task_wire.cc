#include "coordinator/task_wire.h"

#include <cmath>

namespace dtm {

v1::Task ToWireTask(const TaskEntry& entry, const LeaseGrant& grant, const std::string& job_id,
                    int64_t lease_expire_unix_ms) {
  v1::Task task;
  task.set_task_id(grant.task_id);
  task.set_lease_id(grant.lease_id);
  task.set_job_id(job_id);
  switch (entry.kind) {
    case TaskKindForKey::kBaseline: task.set_kind(v1::TASK_KIND_BASELINE_SHARD); break;
    case TaskKindForKey::kEval: task.set_kind(v1::TASK_KIND_EVAL_SHARD); break;
    case TaskKindForKey::kTextWindows: task.set_kind(v1::TASK_KIND_TEXT_WINDOWS); break;
    case TaskKindForKey::kTrain: task.set_kind(v1::TASK_KIND_TRAIN); break;
  }
  *task.mutable_key() = entry.key;
  task.set_model_path(entry.model_path);
  task.set_attempt(static_cast<uint32_t>(grant.attempt));
  task.set_lease_expire_unix_ms(lease_expire_unix_ms);
  task.mutable_rows()->Reserve(static_cast<int>(entry.rows->size()));
  for (const v1::BaselineRow& row : *entry.rows) *task.add_rows() = row;
  if (entry.text) *task.mutable_text_windows() = *entry.text;
  task.set_parent_config(entry.parent_config);
  return task;
}

v1::Task ToWireGangTask(const TaskEntry& entry, const GangGrant& grant, const std::string& job_id,
                        int64_t lease_expire_unix_ms) {
  LeaseGrant lease{grant.task_id, grant.lease_id, grant.attempt, grant.expires_at};
  v1::Task task = ToWireTask(entry, lease, job_id, lease_expire_unix_ms);
  if (entry.train) *task.mutable_train() = *entry.train;
  v1::TrainInput& train = *task.mutable_train();
  train.set_rank(static_cast<uint32_t>(grant.rank));
  train.set_gang_size(static_cast<uint32_t>(grant.size));
  train.set_rendezvous(grant.rendezvous);
  return task;
}

uint64_t WireBytesEstimate(const TaskEntry& entry) {
  // Varint token ids take at most 5 bytes (3 for vocabularies under 2^21); 64 bytes cover a row's
  // other fields and the task's key.
  uint64_t bytes = 512 + (entry.text ? entry.text->text().size() : 0);
  for (const v1::BaselineRow& row : *entry.rows) bytes += 64 + 5 * static_cast<uint64_t>(row.tokens_size());
  return bytes;
}

namespace {

Status ValidateTextWindows(const TaskEntry& task, const v1::CompleteTaskRequest& request, const std::string& where) {
  if (!request.has_text_windows()) return InvalidArgumentError(where + "a text-windows task needs a text-windows output");
  const v1::TextWindowsOutput& out = request.text_windows();
  const uint64_t window = static_cast<uint64_t>(task.key.completion_len()) + 1;
  if (out.windows_size() == 0) return InvalidArgumentError(where + "no windows");
  if (out.text_tokens() < window * static_cast<uint64_t>(out.windows_size()) ||
      out.text_tokens() >= window * static_cast<uint64_t>(out.windows_size() + 1)) {
    return InvalidArgumentError(where + std::to_string(out.windows_size()) + " windows of " + std::to_string(window) +
                                " tokens do not fit a text of " + std::to_string(out.text_tokens()) + " tokens");
  }
  for (int i = 0; i < out.windows_size(); ++i) {
    if (static_cast<uint64_t>(out.windows(i).tokens_size()) != window) {
      return InvalidArgumentError(where + "window " + std::to_string(i) + " has " +
                                  std::to_string(out.windows(i).tokens_size()) + " tokens, not " + std::to_string(window));
    }
  }
  return OkStatus();
}

Status ValidateTraining(const TaskEntry& task, const v1::CompleteTaskRequest& request, const std::string& where) {
  if (!request.has_train()) return InvalidArgumentError(where + "a train task needs a train output");
  const v1::TrainingResult& out = request.train();
  const uint32_t size = task.train ? task.train->gang_size() : 1;
  if (out.rank() >= size) {
    return InvalidArgumentError(where + "rank " + std::to_string(out.rank()) + " is not in a gang of " + std::to_string(size));
  }
  if (out.rank() != 0) return OkStatus();  // only rank 0 reports the run
  if (out.losses_size() == 0 || static_cast<uint32_t>(out.losses_size()) != out.steps()) {
    return InvalidArgumentError(where + std::to_string(out.losses_size()) + " losses for " + std::to_string(out.steps()) +
                                " steps");
  }
  for (double loss : out.losses()) {
    if (!std::isfinite(loss) || loss < 0) return InvalidArgumentError(where + "a loss is not a finite non-negative number");
  }
  if (task.train && out.output_dir() != task.train->output_dir()) {
    return InvalidArgumentError(where + "the output folder " + out.output_dir() + " is not the task's " +
                                task.train->output_dir());
  }
  if (out.output_fingerprint().size() != 64) return InvalidArgumentError(where + "no fingerprint of the trained model");
  return OkStatus();
}

}  // namespace

Status ValidateTaskOutput(const TaskEntry& task, const v1::CompleteTaskRequest& request) {
  const std::string where = "task " + request.task_id().substr(0, 12) + ": ";
  if (task.kind == TaskKindForKey::kTrain) return ValidateTraining(task, request, where);
  const Rows& rows = *task.rows;
  if (task.kind == TaskKindForKey::kTextWindows) return ValidateTextWindows(task, request, where);
  if (task.kind == TaskKindForKey::kBaseline) {
    if (!request.has_baseline())
      return InvalidArgumentError(where + "a baseline shard needs a baseline output");
    const auto& out = request.baseline().rows();
    if (out.size() != static_cast<int>(rows.size())) {
      return InvalidArgumentError(where + std::to_string(out.size()) + " baseline rows for " +
                                  std::to_string(rows.size()) + " probes");
    }
    for (int i = 0; i < out.size(); ++i) {
      const v1::BaselineRow& r = out[i];
      if (r.probe_index() != rows[i].probe_index() || r.prefix_len() != task.key.prefix_len() ||
          r.tokens_size() != static_cast<int>(task.key.prefix_len() + task.key.completion_len())) {
        return InvalidArgumentError(where + "baseline row " + std::to_string(i) + " does not match probe " +
                                    std::to_string(rows[i].probe_index()) + " (index, prefix or length)");
      }
      for (int k = 0; k < static_cast<int>(r.prefix_len()); ++k) {
        if (r.tokens(k) != rows[i].tokens(k)) {
          return InvalidArgumentError(where + "baseline row " + std::to_string(i) +
                                      " changed the probe's prefix");
        }
      }
    }
    return OkStatus();
  }
  if (!request.has_eval()) return InvalidArgumentError(where + "an eval shard needs an eval output");
  const auto& out = request.eval().results();
  if (out.size() != static_cast<int>(rows.size())) {
    return InvalidArgumentError(where + std::to_string(out.size()) + " results for " +
                                std::to_string(rows.size()) + " probes");
  }
  for (int i = 0; i < out.size(); ++i) {
    const v1::ProbeResult& r = out[i];
    if (r.probe_index() != rows[i].probe_index() || r.fdt() > task.key.completion_len() ||
        r.sdt() > task.key.completion_len() || !std::isfinite(r.nll())) {
      return InvalidArgumentError(where + "result " + std::to_string(i) +
                                  " is not a valid result for probe " +
                                  std::to_string(rows[i].probe_index()));
    }
  }
  return OkStatus();
}

FailCause FailCauseOf(const v1::FailTaskRequest& request) {
  switch (request.cause()) {
    case v1::FAILURE_CAUSE_TASK:
      return FailCause::kTask;
    case v1::FAILURE_CAUSE_WORKER:
      return FailCause::kWorker;
    case v1::FAILURE_CAUSE_TRANSIENT:
      return FailCause::kTransient;
    default:
      return request.retryable() ? FailCause::kTransient : FailCause::kTask;
  }
}

v1::LeaseState ToWireLeaseState(HeartbeatResult result) {
  switch (result) {
    case HeartbeatResult::kValid:
      return v1::LEASE_STATE_VALID;
    case HeartbeatResult::kExpired:
      return v1::LEASE_STATE_EXPIRED;
    case HeartbeatResult::kCancelled:
      return v1::LEASE_STATE_CANCELLED;
    case HeartbeatResult::kRevoked:
      return v1::LEASE_STATE_REVOKED;
    case HeartbeatResult::kUnknown:
      break;
  }
  return v1::LEASE_STATE_UNKNOWN;
}

}  // namespace dtm
