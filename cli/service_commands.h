// dtmctl's service commands: the user's client of the coordinator's DtmService (submit, watch,
// results, cancel, jobs).
//
// Each command is a function of its options and a Console that returns the process's exit code, so
// tests call it directly against an in-process fake server. Exit codes:
//   0  success (watch: the job SUCCEEDED)
//   1  the job FAILED or was CANCELLED (watch), or an RPC failed with any code not listed below
//   2  the request was wrong: INVALID_ARGUMENT, NOT_FOUND, a rejected spec, an unreadable file or flag
//   3  the coordinator could not be reached (UNAVAILABLE)
// Errors print as "dtmctl <cmd>: <CODE>: <message>" on the error stream.
#pragma once

#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "common/grpc_security.h"

namespace dtm::cli {

// Where a command writes: results and ids on `out` (for scripts), progress and errors on `err`.
struct Console {
  std::ostream* out;
  std::ostream* err;
  // The progress bar redraws one line with '\r' on a terminal and prints sparse lines otherwise.
  bool err_is_tty = false;
  // Width of the terminal, to keep the redrawn line from wrapping; 0: unknown.
  int columns = 0;

  // std::cout and std::cerr, with the terminal facts of stderr.
  static Console Std();
};

// Retries of calls that are safe to repeat (SubmitJob with the same client_request_id, also after
// DEADLINE_EXCEEDED; WatchJob), after UNAVAILABLE. The wait doubles from `initial_backoff_ms` up to `max_backoff_ms`.
struct RetryPolicy {
  int max_attempts = 5;
  int initial_backoff_ms = 250;
  int max_backoff_ms = 4000;
};

struct ConnectionOptions {
  // host:port of dtm-coordinator's DtmService.
  std::string coordinator = DefaultCoordinatorAddress();
  // A store URL (common/store_url.h) to read instead of asking a daemon: dtmctl then starts a
  // coordinator of its own on that store (cli/embedded_coordinator.h) and sets `coordinator` to it.
  std::string store;
  ClientSecurityOptions security;
  // Deadline of each unary call (WatchJob has none: it lasts as long as the job).
  double timeout_s = 30;
  RetryPolicy retry;

  // $DTM_COORDINATOR, else 127.0.0.1:7070.
  static std::string DefaultCoordinatorAddress();
};

struct WatchOptions {
  ConnectionOptions connection;
  std::string job_id;
  // Cells of the progress bar.
  int bar_width = 30;
};
int WatchCommand(const WatchOptions& options, const Console& console);

struct SubmitOptions {
  ConnectionOptions connection;
  // The job spec (YAML); sent as is, the coordinator validates it.
  std::string spec_path;
  // Then watch the job as `dtmctl watch` does, with its exit code.
  bool watch = false;
  int bar_width = 30;
};
int SubmitCommand(const SubmitOptions& options, const Console& console);

struct ResultsOptions {
  ConnectionOptions connection;
  std::string job_id;
  std::string format = "table";  // table | json | csv
  // Per-probe rows (json only; large).
  bool probes = false;
  // Also configs whose shards are still outstanding; by default only complete ones print.
  bool partial = false;
  // Order the rows by this metric, better first (SortResults, kSortMetricsHelp); empty: job order.
  std::string sort;
  // Then print only the first K rows (the noise floor besides); unset: all. K < 1 is refused.
  std::optional<int> top;
  // Search jobs: every evaluated node of every level, not only each level's beam
  // (GetResultsRequest.all_nodes); no effect on other kinds.
  bool all_nodes = false;
};
// Exit 2 also for a bad --sort or --top, checked before the coordinator is asked, and for --sort
// ppl on a job without ppl.
int ResultsCommand(const ResultsOptions& options, const Console& console);

// `dtmctl report JOB_ID --out FILE.html`: the job's report, one self-contained HTML page
// (report/report_page.h) drawn from the job and every row of its results (incomplete rows and every
// search node included, marked as such). `--out -` writes it to `out`; a file is written beside its
// name and renamed over it. Exit 2 for an unknown job or a file that cannot be written.
struct ReportOptions {
  ConnectionOptions connection;
  std::string job_id;
  std::string out;
};
int ReportCommand(const ReportOptions& options, const Console& console);

struct CancelOptions {
  ConnectionOptions connection;
  std::string job_id;
  std::string reason;
};
int CancelCommand(const CancelOptions& options, const Console& console);

struct JobsOptions {
  ConnectionOptions connection;
  // pending | running | succeeded | failed | cancelled; empty: all.
  std::vector<std::string> states;
};
int JobsCommand(const JobsOptions& options, const Console& console);

// `dtmctl export-config ID [--level K]`: the chosen config of a finished search job, printed in SPEC
// syntax (the canonical `COMPONENT=METHOD,...`, "" for the uncompressed model) as one line on `out`,
// ready for `dtmctl eval --compress`, `dtmctl apply --config` and an evaluate job's `configs`.
// For a quant-search job that is the rank-0 config of level K (default: the deepest level). For a
// sparsify-round job it is its allocation: `COMPONENT=prune:TARGET` for every component whose target
// is above 0, in canonical order (the config the next round's model is pruned to).
// Exit 2 with a one-line error for an unknown job (NOT_FOUND), an evaluate or probe job, a job that
// has not SUCCEEDED (naming its state), --level on a sparsify-round (which has no levels), a level
// the job does not have (naming the levels it has), a level without a rank-0 config, or a
// sparsify-round without an allocation or with one that is not a valid config. The uncompressed
// model (an empty config: a search's level 0, an allocation whose targets are all 0) prints as an
// empty line with a note on `err`: an evaluate job spec refuses an empty config (its noise floor
// measures that model).
struct ExportConfigOptions {
  ConnectionOptions connection;
  std::string job_id;
  // Search level; negative: the deepest level.
  int level = -1;
  // A sparsify run's round (1-based); 0: its last round with an allocation.
  int round = 0;
};
int ExportConfigCommand(const ExportConfigOptions& options, const Console& console);

// `dtmctl purge-worker WORKER_ID`: deletes from the cache every result that worker computed, so that
// later jobs compute them again (a worker found broken or forged). Prints {"worker_id", "results_deleted"}.
struct PurgeWorkerOptions {
  ConnectionOptions connection;
  std::string worker_id;
};
int PurgeWorkerCommand(const PurgeWorkerOptions& options, const Console& console);

// A fresh random client_request_id (a version 4 UUID).
std::string NewClientRequestId();

}  // namespace dtm::cli
