#include "cli/service_commands.h"

#include <grpcpp/grpcpp.h>
#include <nlohmann/json.hpp>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include "cli/progress_bar.h"
#include "cli/results_format.h"
#include "common/compression_config.h"
#include "common/grpc_status.h"
#include "dtm/v1/dtm_service.grpc.pb.h"
#include "report/report_document.h"
#include "report/report_page.h"

namespace dtm::cli {
namespace {

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

// Prints "dtmctl <command>: <CODE>: <message>" and returns the exit code the code maps to.
int ReportError(const std::string& command, const Status& status, const ConnectionOptions& connection,
                const Console& console) {
  std::ostream& err = *console.err;
  err << "dtmctl " << command << ": " << StatusCodeName(status.code()) << ": ";
  switch (status.code()) {
    case StatusCode::kUnavailable:
      err << "cannot reach the coordinator at " << connection.coordinator << ": " << status.message()
          << std::endl;
      return kExitUnreachable;
    case StatusCode::kDeadlineExceeded:
      err << "no answer from the coordinator at " << connection.coordinator << " within "
          << connection.timeout_s << " s (--timeout)" << std::endl;
      return kExitFailed;
    case StatusCode::kInvalidArgument:
    case StatusCode::kNotFound:
      err << status.message() << std::endl;
      return kExitUsage;
    default:
      err << status.message() << std::endl;
      return kExitFailed;
  }
}

int ReportError(const std::string& command, const grpc::Status& status, const ConnectionOptions& connection,
                const Console& console) {
  return ReportError(command, FromGrpcStatus(status), connection, console);
}

StatusOr<std::unique_ptr<v1::DtmService::Stub>> Connect(const ConnectionOptions& connection) {
  if (connection.coordinator.empty()) return InvalidArgumentError("--coordinator: empty address");
  if (!(connection.timeout_s > 0)) {
    return InvalidArgumentError("--timeout: must be a positive number of seconds, got " +
                                std::to_string(connection.timeout_s));
  }
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::Channel> channel,
                   MakeChannel(connection.coordinator, connection.security));
  return v1::DtmService::NewStub(channel);
}

void SetUnaryDeadline(grpc::ClientContext* context, const ConnectionOptions& connection) {
  SetDeadline(context, std::chrono::milliseconds(static_cast<int64_t>(connection.timeout_s * 1000)));
}

// One unary call under the command's deadline, e.g. Unary(&Stub::GetJob, stub, connection, request, &job).
// A ClientContext serves one call only, so each call makes its own.
template <typename Request, typename Response>
grpc::Status Unary(grpc::Status (v1::DtmService::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                   v1::DtmService::Stub* stub, const ConnectionOptions& connection, const Request& request,
                   Response* response) {
  grpc::ClientContext context;
  SetUnaryDeadline(&context, connection);
  return (stub->*method)(&context, request, response);
}

// Every page of `request`'s results (each within the message limit), the rows together in one
// response with the first page's other fields.
grpc::Status AllResults(v1::DtmService::Stub* stub, const ConnectionOptions& connection, v1::GetResultsRequest request,
                        v1::GetResultsResponse* response) {
  do {
    v1::GetResultsResponse page;
    const grpc::Status status = Unary(&v1::DtmService::Stub::GetResults, stub, connection, request, &page);
    if (!status.ok()) return status;
    request.set_page_token(AppendResultsPage(std::move(page), request.page_token(), response));
  } while (!request.page_token().empty());
  return grpc::Status::OK;
}

// Waits before attempt number `attempt` (1 for the first retry).
void Backoff(const RetryPolicy& policy, int attempt) {
  int64_t ms = policy.initial_backoff_ms;
  for (int i = 1; i < attempt && ms < policy.max_backoff_ms; ++i) ms *= 2;
  std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(ms, policy.max_backoff_ms)));
}

// Runs `call` (which makes a fresh ClientContext each time) until it returns anything but
// UNAVAILABLE (and, when `also_on_deadline`, DEADLINE_EXCEEDED) or the policy's attempts are spent.
// Only for calls that are safe to repeat; a call that timed out may have taken effect, so
// `also_on_deadline` is for idempotent ones only.
grpc::Status WithRetries(const std::string& command, const ConnectionOptions& connection,
                         const Console& console, bool also_on_deadline, const std::function<grpc::Status()>& call) {
  const int attempts = std::max(connection.retry.max_attempts, 1);
  grpc::Status status;
  for (int attempt = 1; attempt <= attempts; ++attempt) {
    status = call();
    const bool again = status.error_code() == grpc::StatusCode::UNAVAILABLE ||
                       (also_on_deadline && status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED);
    if (!again || attempt == attempts) break;
    *console.err << "dtmctl " << command << ": coordinator at " << connection.coordinator << ": "
                 << StatusCodeName(FromGrpcStatus(status).code()) << " ("
                 << status.error_message() << "), retrying" << std::endl;
    Backoff(connection.retry, attempt);
  }
  return status;
}

// The live progress display on the error stream: one redrawn line on a terminal, sparse lines
// otherwise (see ProgressLogFilter).
class ProgressView {
 public:
  ProgressView(const Console& console, int bar_width, uint32_t completion_len)
      : console_(console), bar_width_(bar_width), completion_len_(completion_len) {}

  void Show(const v1::JobProgress& progress) {
    std::ostream& err = *console_.err;
    if (!console_.err_is_tty) {
      if (filter_.ShouldPrint(progress)) err << RenderProgress(progress, bar_width_, completion_len_) << std::endl;
      return;
    }
    std::string line = RenderProgress(progress, bar_width_, completion_len_);
    // Wrapping would make '\r' redraw only the last row of the line, leaving the rest behind.
    if (console_.columns > 1 && static_cast<int>(line.size()) >= console_.columns)
      line.resize(console_.columns - 1);
    const size_t drawn = line.size();
    if (drawn < drawn_) line += std::string(drawn_ - drawn, ' ');
    err << '\r' << line << std::flush;
    drawn_ = drawn;
  }

  // A line of its own (a reconnect notice, an error), not overwritten by the next redraw.
  void Note(const std::string& text) {
    EndLine();
    *console_.err << text << std::endl;
  }

  void EndLine() {
    if (drawn_ > 0) *console_.err << '\n' << std::flush;
    drawn_ = 0;
  }

 private:
  const Console& console_;
  const int bar_width_;
  const uint32_t completion_len_;  // 0: unknown
  ProgressLogFilter filter_;
  size_t drawn_ = 0;  // characters of the line on screen (TTY only)
};

// Why the job ended badly, from its record; the last progress message if that cannot be had.
std::string JobError(v1::DtmService::Stub* stub, const ConnectionOptions& connection,
                     const std::string& job_id, const v1::JobProgress& last) {
  v1::GetJobRequest request;
  request.set_job_id(job_id);
  v1::Job job;
  if (Unary(&v1::DtmService::Stub::GetJob, stub, connection, request, &job).ok() && !job.error().message().empty())
    return job.error().message();
  return last.message().empty() ? "no reason given" : last.message();
}

// Follows WatchJob until the job is terminal, reconnecting after UNAVAILABLE (a coordinator restart,
// a dropped connection). Consecutive failures without a message in between are bounded by the
// retry policy; a message resets the count.
int Watch(v1::DtmService::Stub* stub, const std::string& command, const ConnectionOptions& connection,
          const std::string& job_id, int bar_width, const Console& console) {
  // The completion length, so that the bar can say when the best fdt75 is saturated at it; the bar
  // goes without the mark when the job cannot be read (the stream below reports why).
  v1::GetJobRequest get;
  get.set_job_id(job_id);
  v1::Job job;
  const uint32_t completion_len =
      Unary(&v1::DtmService::Stub::GetJob, stub, connection, get, &job).ok() ? job.summary().completion_len() : 0;
  ProgressView view(console, bar_width, completion_len);
  std::optional<v1::JobProgress> last;
  int failures = 0;
  while (true) {
    grpc::ClientContext context;
    v1::WatchJobRequest request;
    request.set_job_id(job_id);
    std::unique_ptr<grpc::ClientReader<v1::JobProgress>> reader = stub->WatchJob(&context, request);
    v1::JobProgress progress;
    while (reader->Read(&progress)) {
      failures = 0;
      view.Show(progress);
      last = progress;
      if (IsTerminal(progress.state())) {
        // The server ends the stream itself after this message; do not wait on it if it does not.
        context.TryCancel();
        break;
      }
    }
    const grpc::Status status = reader->Finish();
    if (last.has_value() && IsTerminal(last->state())) break;
    // A stream that ended OK without a terminal state (a server shutting down cleanly) is retried
    // like a broken one; anything else is an answer.
    if (!status.ok() && status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      view.EndLine();
      return ReportError(command, status, connection, console);
    }
    if (++failures >= std::max(connection.retry.max_attempts, 1)) {
      view.EndLine();
      return ReportError(
          command,
          status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE, "the watch stream keeps ending early")
                      : status,
          connection, console);
    }
    const std::string why = status.ok() ? std::string("ended early") : status.error_message();
    view.Note("dtmctl " + command + ": " +
              (last.has_value() ? "lost the watch stream from " : "coordinator unavailable at ") +
              connection.coordinator + " (" + why + "), " + (last.has_value() ? "reconnecting" : "retrying"));
    Backoff(connection.retry, failures);
  }
  view.EndLine();
  if (last->state() == v1::JOB_STATE_SUCCEEDED) return kExitOk;
  *console.err << "dtmctl " << command << ": job " << job_id << " " << JobStateName(last->state()) << ": "
               << JobError(stub, connection, job_id, *last) << std::endl;
  return kExitFailed;
}

StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError("cannot read " + path + ": " + std::strerror(errno));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) return DataLossError("cannot read " + path + ": " + std::strerror(errno));
  return content.str();
}

// The config a sparsify-round's allocation prunes to: `COMPONENT=prune:TARGET` for every component
// with a target above 0, in canonical order. Parsing it checks the component names against the
// model's layer count and the targets against [0, 1]; "" when every target is 0.
StatusOr<std::string> AllocationConfig(const v1::SparsityAllocation& allocation) {
  std::string text;
  for (const v1::ComponentSparsity& c : allocation.components()) {
    if (std::isnan(c.target())) {
      return InvalidArgumentError("the allocation's target of " + c.component() + " is not a number");
    }
    if (c.target() <= 0) continue;
    text += (text.empty() ? "" : ",") + c.component() + "=prune:" + ShortestDouble(c.target());
  }
  StatusOr<CompressionConfig> config =
      ParseCompressionConfig(text, static_cast<int>(allocation.num_layers()));
  if (!config.ok()) {
    return InvalidArgumentError("the allocation is not a valid config for a model of " +
                                std::to_string(allocation.num_layers()) +
                                " layers: " + config.status().message());
  }
  return config->Canonical();
}

}  // namespace

Console Console::Std() {
  Console console{&std::cout, &std::cerr};
  console.err_is_tty = isatty(STDERR_FILENO) == 1;
  winsize size{};
  if (console.err_is_tty && ioctl(STDERR_FILENO, TIOCGWINSZ, &size) == 0) console.columns = size.ws_col;
  return console;
}

std::string ConnectionOptions::DefaultCoordinatorAddress() {
  const char* env = std::getenv("DTM_COORDINATOR");
  return env != nullptr && *env != '\0' ? env : "127.0.0.1:7070";
}

std::string NewClientRequestId() {
  std::random_device device;
  std::mt19937_64 rng((static_cast<uint64_t>(device()) << 32) ^ device());
  uint8_t bytes[16];
  for (uint8_t& b : bytes) b = static_cast<uint8_t>(rng());
  bytes[6] = (bytes[6] & 0x0f) | 0x40;  // version 4: random
  bytes[8] = (bytes[8] & 0x3f) | 0x80;  // RFC 4122 variant
  char text[37];
  std::snprintf(text, sizeof text, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
                bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7], bytes[8],
                bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]);
  return text;
}

int SubmitCommand(const SubmitOptions& options, const Console& console) {
  const std::string command = "submit";
  StatusOr<std::string> spec = ReadFile(options.spec_path);
  if (!spec.ok()) {
    *console.err << "dtmctl submit: " << spec.status().message() << std::endl;
    return kExitUsage;
  }
  auto stub = Connect(options.connection);
  if (!stub.ok()) return ReportError(command, stub.status(), options.connection, console);

  v1::SubmitJobRequest request;
  request.set_spec_yaml(*spec);
  // One id for every attempt: a retry after a lost reply, or after a deadline that passed while the
  // coordinator was creating the job, returns the job the first attempt made.
  request.set_client_request_id(NewClientRequestId());
  v1::Job job;
  const grpc::Status status = WithRetries(command, options.connection, console, /*also_on_deadline=*/true, [&] {
    job.Clear();
    return Unary(&v1::DtmService::Stub::SubmitJob, stub->get(), options.connection, request, &job);
  });
  if (status.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
    *console.err << "dtmctl submit: " << options.spec_path << ": " << status.error_message() << std::endl;
    return kExitUsage;
  }
  if (!status.ok()) return ReportError(command, status, options.connection, console);
  *console.out << job.job_id() << std::endl;
  if (!options.watch) return kExitOk;
  return Watch(stub->get(), command, options.connection, job.job_id(), options.bar_width, console);
}

int WatchCommand(const WatchOptions& options, const Console& console) {
  auto stub = Connect(options.connection);
  if (!stub.ok()) return ReportError("watch", stub.status(), options.connection, console);
  return Watch(stub->get(), "watch", options.connection, options.job_id, options.bar_width, console);
}

int ResultsCommand(const ResultsOptions& options, const Console& console) {
  const std::string command = "results";
  StatusOr<ResultsFormat> format = ParseResultsFormat(options.format);
  if (!format.ok()) return ReportError(command, format.status(), options.connection, console);
  if (options.probes && *format != ResultsFormat::kJson) {
    return ReportError(command,
                       InvalidArgumentError("--probes: per-probe rows print only with --format json"),
                       options.connection, console);
  }
  if (options.top && *options.top < 1) {
    return ReportError(command,
                       InvalidArgumentError("--top: must be at least 1, got " + std::to_string(*options.top)),
                       options.connection, console);
  }
  // Refused before the coordinator is asked; whether the job has ppl shows only in its results.
  if (Status metric = CheckSortMetric(options.sort); !options.sort.empty() && !metric.ok()) {
    return ReportError(command, metric, options.connection, console);
  }
  auto stub = Connect(options.connection);
  if (!stub.ok()) return ReportError(command, stub.status(), options.connection, console);

  v1::GetResultsRequest request;
  request.set_job_id(options.job_id);
  request.set_include_probe_results(options.probes);
  request.set_all_nodes(options.all_nodes);
  v1::GetResultsResponse response;
  if (grpc::Status status = AllResults(stub->get(), options.connection, request, &response); !status.ok()) {
    return ReportError(command, status, options.connection, console);
  }
  for (const std::string& warning : response.warnings()) {
    *console.err << "dtmctl results: warning: " << warning << std::endl;
  }

  // Metrics of an incomplete config cover only the probes so far and would read as final. A finished
  // race's are final: it decided on part of the probes, and its rows say how many (and the summary
  // what was skipped).
  const int total = response.results_size();
  const bool raced = response.has_racing() && response.state() == v1::JOB_STATE_SUCCEEDED;
  if (!options.partial && !raced) {
    auto* results = response.mutable_results();
    results->erase(std::remove_if(results->begin(), results->end(),
                                  [](const v1::ConfigResult& r) { return !r.complete(); }),
                   results->end());
  }
  const int left_out = total - response.results_size();
  if (response.state() != v1::JOB_STATE_SUCCEEDED || left_out > 0) {
    *console.err << "dtmctl results: warning: job " << response.job_id() << " is "
                 << JobStateName(response.state()) << ": showing " << response.results_size() << " of "
                 << total << " configs";
    if (left_out > 0) *console.err << " (" << left_out << " incomplete left out; --partial shows them)";
    *console.err << std::endl;
  }
  if (Status sorted = SortResults(options.sort, options.top.value_or(0), &response); !sorted.ok()) {
    return ReportError(command, sorted, options.connection, console);
  }
  *console.out << FormatResults(response, *format) << std::flush;
  return kExitOk;
}

int ReportCommand(const ReportOptions& options, const Console& console) {
  const std::string command = "report";
  if (options.out.empty()) {
    return ReportError(command, InvalidArgumentError("--out: name the HTML file to write"), options.connection, console);
  }
  auto stub = Connect(options.connection);
  if (!stub.ok()) return ReportError(command, stub.status(), options.connection, console);
  v1::GetJobRequest job_request;
  job_request.set_job_id(options.job_id);
  v1::Job job;
  if (grpc::Status status = Unary(&v1::DtmService::Stub::GetJob, stub->get(), options.connection, job_request, &job);
      !status.ok()) {
    return ReportError(command, status, options.connection, console);
  }
  // Every row, incomplete ones and every node of a search included: the page marks what is partial.
  v1::GetResultsRequest request;
  request.set_job_id(options.job_id);
  request.set_all_nodes(true);
  v1::GetResultsResponse results;
  if (grpc::Status status = AllResults(stub->get(), options.connection, request, &results); !status.ok()) {
    return ReportError(command, status, options.connection, console);
  }
  const std::string page = report::ReportHtml(report::ReportDocument(job, results, std::time(nullptr)));
  if (options.out == "-") {
    *console.out << page << std::flush;
    return kExitOk;
  }
  // Written beside the target and renamed over it: an existing report is replaced whole or not at all.
  const std::string temp = options.out + ".tmp" + std::to_string(::getpid());
  {
    std::ofstream file(temp, std::ios::binary | std::ios::trunc);
    file << page;
    file.close();
    if (!file) {
      std::remove(temp.c_str());
      return ReportError(command, InvalidArgumentError("--out " + options.out + ": cannot write " + temp),
                         options.connection, console);
    }
  }
  if (std::rename(temp.c_str(), options.out.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(temp.c_str());
    return ReportError(command, InvalidArgumentError("--out " + options.out + ": " + why), options.connection, console);
  }
  *console.err << "dtmctl report: wrote " << options.out << " (" << page.size() << " bytes, job " << job.job_id() << ", "
               << JobStateName(job.state()) << ", " << results.results_size() << " configs)" << std::endl;
  return kExitOk;
}

int PurgeWorkerCommand(const PurgeWorkerOptions& options, const Console& console) {
  auto stub = Connect(options.connection);
  if (!stub.ok()) return ReportError("purge-worker", stub.status(), options.connection, console);
  v1::PurgeWorkerResultsRequest request;
  request.set_worker_id(options.worker_id);
  v1::PurgeWorkerResultsResponse response;
  const grpc::Status status =
      Unary(&v1::DtmService::Stub::PurgeWorkerResults, stub->get(), options.connection, request, &response);
  if (!status.ok()) return ReportError("purge-worker", status, options.connection, console);
  *console.out << "{\"worker_id\": " << nlohmann::json(options.worker_id).dump()
               << ", \"results_deleted\": " << response.results_deleted() << "}" << std::endl;
  return kExitOk;
}

int CancelCommand(const CancelOptions& options, const Console& console) {
  auto stub = Connect(options.connection);
  if (!stub.ok()) return ReportError("cancel", stub.status(), options.connection, console);
  v1::CancelJobRequest request;
  request.set_job_id(options.job_id);
  request.set_reason(options.reason.empty() ? "cancelled with dtmctl" : options.reason);
  v1::Job job;
  const grpc::Status status = Unary(&v1::DtmService::Stub::CancelJob, stub->get(), options.connection, request, &job);
  if (!status.ok()) return ReportError("cancel", status, options.connection, console);
  // Cancelling a job that had already ended returns it unchanged, so this may say SUCCEEDED.
  *console.out << job.job_id() << " " << JobStateName(job.state()) << std::endl;
  return kExitOk;
}

int JobsCommand(const JobsOptions& options, const Console& console) {
  const std::string command = "jobs";
  v1::ListJobsRequest request;
  for (const std::string& name : options.states) {
    StatusOr<v1::JobState> state = ParseJobState(name);
    if (!state.ok()) return ReportError(command, state.status(), options.connection, console);
    request.add_states(*state);
  }
  auto stub = Connect(options.connection);
  if (!stub.ok()) return ReportError(command, stub.status(), options.connection, console);

  std::vector<v1::Job> jobs;
  while (true) {
    v1::ListJobsResponse page;
    const grpc::Status status =
        Unary(&v1::DtmService::Stub::ListJobs, stub->get(), options.connection, request, &page);
    if (!status.ok()) return ReportError(command, status, options.connection, console);
    jobs.insert(jobs.end(), page.jobs().begin(), page.jobs().end());
    // A token equal to the one just sent would loop forever; treat it as the last page.
    if (page.next_page_token().empty() || page.next_page_token() == request.page_token()) break;
    request.set_page_token(page.next_page_token());
  }
  *console.out << FormatJobsTable(jobs) << std::flush;
  return kExitOk;
}

int ExportConfigCommand(const ExportConfigOptions& options, const Console& console) {
  const std::string command = "export-config";
  // A refusal of this command (not of the coordinator): one line, exit 2.
  const auto refuse = [&](const std::string& message) {
    *console.err << "dtmctl " << command << ": " << message << std::endl;
    return kExitUsage;
  };
  auto stub = Connect(options.connection);
  if (!stub.ok()) return ReportError(command, stub.status(), options.connection, console);

  // The job record says its kind and state; the results hold the levels and ranks.
  v1::GetJobRequest job_request;
  job_request.set_job_id(options.job_id);
  v1::Job job;
  const grpc::Status job_status =
      Unary(&v1::DtmService::Stub::GetJob, stub->get(), options.connection, job_request, &job);
  if (!job_status.ok()) return ReportError(command, job_status, options.connection, console);
  const v1::JobKind kind = job.summary().kind();
  if (kind == v1::JOB_KIND_EVALUATE || kind == v1::JOB_KIND_PROBE) {
    return refuse("job " + options.job_id + " is " + (kind == v1::JOB_KIND_EVALUATE ? "an " : "a ") +
                  JobKindName(kind) +
                  " job; export-config needs a search (quant-search or sparsify-round)");
  }
  if (options.round > 0 && kind != v1::JOB_KIND_SPARSIFY) {
    return refuse("job " + options.job_id + " is a " + JobKindName(kind) + " job; --round is for a sparsify run");
  }
  if (kind == v1::JOB_KIND_SPARSIFY) {
    if (options.level >= 0) return refuse("job " + options.job_id + ": a sparsify run has rounds, not levels (--round)");
    // Any state: the allocated rounds of a run under way, or one that failed, are as final as they get.
    v1::GetResultsRequest request;
    request.set_job_id(options.job_id);
    v1::GetResultsResponse response;
    const grpc::Status status =
        Unary(&v1::DtmService::Stub::GetResults, stub->get(), options.connection, request, &response);
    if (!status.ok()) return ReportError(command, status, options.connection, console);
    const v1::SparsifyRoundResult* chosen = nullptr;
    for (const v1::SparsifyRoundResult& r : response.rounds()) {
      if (!r.has_allocation()) continue;
      if (options.round == 0 || static_cast<int>(r.round()) == options.round) chosen = &r;
    }
    if (chosen == nullptr) {
      return refuse("job " + options.job_id + " has " +
                    (options.round > 0 ? "no allocation for round " + std::to_string(options.round) + " yet"
                                       : std::string("no allocated round yet")));
    }
    StatusOr<std::string> config = AllocationConfig(chosen->allocation());
    if (!config.ok()) return refuse("job " + options.job_id + ": " + config.status().message());
    *console.out << *config << std::endl;
    return kExitOk;
  }
  if (kind == v1::JOB_KIND_SPARSIFY_ROUND && options.level >= 0) {
    return refuse("job " + options.job_id +
                  ": sparsify-round has no levels; export-config prints its allocation (drop --level)");
  }
  if (job.state() != v1::JOB_STATE_SUCCEEDED) {
    return refuse("job " + options.job_id + " is " + JobStateName(job.state()) +
                  "; export-config needs a job that SUCCEEDED");
  }

  v1::GetResultsRequest results_request;
  results_request.set_job_id(options.job_id);
  v1::GetResultsResponse response;
  const grpc::Status results_status =
      Unary(&v1::DtmService::Stub::GetResults, stub->get(), options.connection, results_request, &response);
  if (!results_status.ok()) return ReportError(command, results_status, options.connection, console);
  if (response.state() != v1::JOB_STATE_SUCCEEDED) {
    return refuse("job " + options.job_id + " is " + JobStateName(response.state()) +
                  "; export-config needs a job that SUCCEEDED");
  }
  if (kind == v1::JOB_KIND_SPARSIFY_ROUND) {
    if (!response.has_allocation()) {
      return refuse("job " + options.job_id +
                    " (sparsify-round) SUCCEEDED without an allocation in its results");
    }
    StatusOr<std::string> config = AllocationConfig(response.allocation());
    if (!config.ok()) return refuse("job " + options.job_id + ": " + config.status().message());
    if (config->empty()) {
      *console.err << "dtmctl " << command
                   << ": note: the allocation prunes nothing (every target is 0): the uncompressed model "
                      "(an empty config)"
                   << std::endl;
    }
    *console.out << *config << std::endl;
    return kExitOk;
  }
  std::set<uint32_t> levels;
  for (const v1::ConfigResult& r : response.results()) {
    if (r.has_search_level()) levels.insert(r.search_level());
  }
  if (levels.empty()) {
    return refuse("job " + options.job_id + " (" + JobKindName(kind) +
                  ") has no search levels in its results; export-config needs a quant-search with levels");
  }
  std::string available;
  for (uint32_t l : levels) available += (available.empty() ? "" : ", ") + std::to_string(l);
  const uint32_t deepest = *levels.rbegin();
  uint32_t level = deepest;
  if (options.level >= 0) {
    if (levels.count(static_cast<uint32_t>(options.level)) == 0) {
      return refuse("job " + options.job_id + " has no level " + std::to_string(options.level) +
                    " (levels " + available + "; the deepest is " + std::to_string(deepest) + ")");
    }
    level = static_cast<uint32_t>(options.level);
  }
  const v1::ConfigResult* best = nullptr;
  for (const v1::ConfigResult& r : response.results()) {
    if (r.has_search_level() && r.search_level() == level && r.has_rank() && r.rank() == 0) {
      best = &r;
      break;
    }
  }
  if (best == nullptr) {
    return refuse("job " + options.job_id + " has no rank-0 config at level " + std::to_string(level));
  }
  if (best->config().empty()) {
    // `eval --compress ''` takes it; an evaluate job spec measures it with `noise_floor: true`.
    *console.err << "dtmctl " << command << ": note: level " << level
                 << " is the uncompressed model (an empty config)" << std::endl;
  }
  *console.out << best->config() << std::endl;
  return kExitOk;
}

}  // namespace dtm::cli
