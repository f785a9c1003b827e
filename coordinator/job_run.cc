#include "coordinator/job_run.h"

#include <google/protobuf/util/time_util.h>

#include <algorithm>
#include <cctype>

#include "coordinator/store_keys.h"

namespace dtm {

google::protobuf::Timestamp WallClockNow() {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  return google::protobuf::util::TimeUtil::NanosecondsToTimestamp(ns.count());
}

bool IsFinal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

std::string JobStateLabel(v1::JobState state) {
  if (state == v1::JOB_STATE_UNSPECIFIED) return "unspecified";
  // JOB_STATE_RUNNING -> "running": the generated names are the one list of states.
  std::string name = v1::JobState_Name(state).substr(sizeof("JOB_STATE_") - 1);
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

void RestoreResolution(JobRun& run) {
  const v1::JobSummary& summary = run.job.summary();
  if (summary.model_fingerprint().empty() || summary.shard_size() == 0) return;
  run.base_key.set_model_fingerprint(summary.model_fingerprint());
  run.base_key.set_probe_set_fingerprint(summary.probe_set_fingerprint());
  run.base_key.set_prefix_len(summary.prefix_len());
  run.base_key.set_completion_len(summary.completion_len());
  run.base_key.set_dtype(summary.dtype());
  run.base_key.set_calibration_fingerprint(summary.calibration_fingerprint());
  run.baseline_key = run.base_key;
  const std::string& reference = summary.reference_model_fingerprint();
  if (!reference.empty() && reference != summary.model_fingerprint()) {
    run.baseline_key.set_model_fingerprint(reference);
    run.base_key.set_probe_set_fingerprint(ReferenceBaselineFingerprint(reference, summary.probe_set_fingerprint()));
  }
  run.shards.clear();
  for (uint32_t begin = 0; begin < summary.num_probes(); begin += summary.shard_size()) {
    run.shards.emplace_back(begin, std::min(summary.num_probes(), begin + summary.shard_size()));
  }
}

bool HasSeparateReference(const JobRun& run) {
  return run.baseline_key.model_fingerprint() != run.base_key.model_fingerprint();
}

void RefreshProgress(JobRun& run, JobRun::TimePoint now) {
  v1::JobProgress& progress = *run.job.mutable_progress();
  progress.set_job_id(run.job.job_id());
  progress.set_state(run.job.state());
  *progress.mutable_update_time() = WallClockNow();
  const double elapsed = std::chrono::duration<double>(now - run.started).count();
  if (elapsed > 0 && run.probes_computed_here > 0) {
    progress.set_probes_per_second(run.probes_computed_here / elapsed);
    const double tasks_per_second = run.tasks_computed_here / elapsed;
    const double left =
        static_cast<double>(progress.tasks_total()) - progress.tasks_done() + static_cast<double>(run.later_tasks);
    if (left > 0 && tasks_per_second > 0) {
      progress.set_eta_seconds(left / tasks_per_second);
    } else {
      progress.clear_eta_seconds();
    }
  }
}

}  // namespace dtm
