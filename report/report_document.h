// The document a report page draws: a job's facts and its results, as one JSON object. The same
// document is embedded in `dtmctl report`'s file and served by the coordinator's live pages, so the
// page's figures and `dtmctl results --format json` come from one source.
#pragma once

#include <ctime>

#include <nlohmann/json.hpp>

#include "dtm/v1/dtm_service.pb.h"
#include "dtm/v1/job.pb.h"

namespace dtm::report {

// {"dtm_report": 1 (this layout's version), "dtm_version", "generated" (UTC, ISO 8601),
//  "job": {"job_id", "name", "kind" ("probe", ...), "state" ("RUNNING", ...), "model_path",
//          "model_fingerprint", "reference_model_path", "reference_model_fingerprint",
//          "probe_set_fingerprint", "num_probes", "prefix_len", "completion_len", "dtype" ("float32",
//          "float16", "bfloat16" or "" for the worker's default), "shard_size", "num_configs",
//          "num_layers", "spec_yaml", "create_time", "start_time", "end_time" (UTC or null),
//          "duration_seconds" (end or `generated` minus start; null before the start), "error"
//          (message or null), "progress": {"tasks_total", "tasks_done", "tasks_failed",
//          "tasks_requeued", "tasks_cached", "probes_per_second", "eta_seconds"?, "search_level"?,
//          "best_fdt75"?, "best_config"?, "message"}},
//  "results": the document of `dtmctl results --format json` (cli/results_format.h)}.
// `results` should hold every page's rows (all nodes of a search); probe rows are left out of the
// page's figures but kept if present.
nlohmann::json ReportDocument(const v1::Job& job, const v1::GetResultsResponse& results, std::time_t generated);

}  // namespace dtm::report
