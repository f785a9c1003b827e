#include "report/report_document.h"

#include <string>

#include "cli/progress_bar.h"
#include "cli/results_format.h"
#include "common/version.h"

namespace dtm::report {
namespace {

nlohmann::json Utc(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return nullptr;
  return cli::FormatUtc(t);
}

std::string DtypeName(v1::Dtype dtype) {
  switch (dtype) {
    case v1::DTYPE_F32: return "float32";
    case v1::DTYPE_F16: return "float16";
    case v1::DTYPE_BF16: return "bfloat16";
    default: return "";
  }
}

nlohmann::json ProgressJson(const v1::JobProgress& p) {
  nlohmann::json j = {{"tasks_total", p.tasks_total()},
                      {"tasks_done", p.tasks_done()},
                      {"tasks_failed", p.tasks_failed()},
                      {"tasks_requeued", p.tasks_requeued()},
                      {"tasks_cached", p.tasks_cached()},
                      {"probes_per_second", p.probes_per_second()},
                      {"message", p.message()}};
  if (p.has_eta_seconds()) j["eta_seconds"] = p.eta_seconds();
  if (p.has_search_level()) j["search_level"] = p.search_level();
  if (p.has_best_fdt75()) j["best_fdt75"] = p.best_fdt75();
  if (p.has_best_config()) j["best_config"] = p.best_config();
  return j;
}

}  // namespace

nlohmann::json ReportDocument(const v1::Job& job, const v1::GetResultsResponse& results, std::time_t generated) {
  const v1::JobSummary& s = job.summary();
  google::protobuf::Timestamp now;
  now.set_seconds(generated);
  nlohmann::json duration = nullptr;
  if (job.has_start_time() && job.start_time().seconds() > 0) {
    const auto& end = job.has_end_time() && job.end_time().seconds() > 0 ? job.end_time() : now;
    duration = static_cast<double>(end.seconds() - job.start_time().seconds()) +
               (end.nanos() - job.start_time().nanos()) * 1e-9;
  }
  nlohmann::json job_json = {
      {"job_id", job.job_id()},
      {"name", s.name()},
      {"kind", cli::JobKindName(s.kind())},
      {"state", cli::JobStateName(job.state())},
      {"model_path", s.model_path()},
      {"model_fingerprint", s.model_fingerprint()},
      {"reference_model_path", s.reference_model_path()},
      {"reference_model_fingerprint", s.reference_model_fingerprint()},
      {"probe_set_fingerprint", s.probe_set_fingerprint()},
      {"num_probes", s.num_probes()},
      {"prefix_len", s.prefix_len()},
      {"completion_len", s.completion_len()},
      {"dtype", DtypeName(s.dtype())},
      {"shard_size", s.shard_size()},
      {"num_configs", s.num_configs()},
      {"num_layers", s.num_layers()},
      {"spec_yaml", job.spec_yaml()},
      {"create_time", Utc(job.create_time())},
      {"start_time", Utc(job.start_time())},
      {"end_time", Utc(job.end_time())},
      {"duration_seconds", duration},
      {"error", job.has_error() && !job.error().message().empty() ? nlohmann::json(job.error().message())
                                                                   : nlohmann::json(nullptr)},
      {"progress", ProgressJson(job.progress())},
  };
  return {{"dtm_report", 1},
          {"dtm_version", kDtmVersion},
          {"generated", cli::FormatUtc(now)},
          {"job", std::move(job_json)},
          {"results", nlohmann::json::parse(cli::FormatResultsJson(results))}};
}

}  // namespace dtm::report
