// How `dtmctl results` and `dtmctl jobs` print what the coordinator returns: pure functions of the
// messages, tested without a server.
//
// The uncompressed model (canonical config "") prints as "(uncompressed)" in tables; the noise floor
// (GetResultsResponse.noise_floor) is the first row of the table and of the CSV, and a key of its own
// in JSON. It is left out when it is unset or when a result already is the uncompressed config.
//
// A sparsify-round job's results are its probe configs ("COMPONENT=prune:F", without level or rank);
// its answer is GetResultsResponse.allocation, which each format prints as said below.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "dtm/v1/dtm_service.pb.h"

namespace dtm::cli {

enum class ResultsFormat { kTable, kJson, kCsv };

// "table", "json" or "csv".
StatusOr<ResultsFormat> ParseResultsFormat(std::string_view name);

// The share of a config's probes that never diverged: FDT equal to the completion length, the last
// bin of Metrics.fdt_histogram (completion_len + 1 bins, FDT in [0, completion_len]) over
// num_probes. nullopt without a histogram or probes.
std::optional<double> NeverDivergedShare(const v1::Metrics& m);

// Whether fdt75 is the completion length (the histogram's last bin): saturated, it cannot rank
// configs (SPEC "Searches"). That takes at least a quarter of the probes never diverging; exactly,
// with n probes and fdt75 the type-7 quantile, n - floor(0.75 (n - 1)) of them (17 of 64, 251 of
// 1000). False without a histogram or probes.
bool Fdt75Saturated(const v1::Metrics& m);

// A config that compresses exactly one component, taken apart: "model.layers.3.mlp.up_proj=gptq:4"
// is layer 3, component "mlp.up_proj", method "gptq:4". nullopt for any other config (the
// uncompressed model, several components, or text that is not a component name).
struct SingleComponent {
  int layer = 0;
  std::string component;
  std::string method;
};
std::optional<SingleComponent> SingleComponentOf(std::string_view config);

// What `results --sort` takes, each better first: higher fdt75, fdt_mean and never_diverged; lower
// sdt_mean (fewer divergent tokens), dppl, ppl and nll_mean.
inline constexpr char kSortMetricsHelp[] =
    "fdt75, fdt_mean, never_diverged (higher first), sdt_mean, dppl, ppl, nll_mean (lower first)";

// OK for a metric of kSortMetricsHelp; INVALID_ARGUMENT naming the choices otherwise.
Status CheckSortMetric(std::string_view metric);

// Orders response->results by `metric`, better first; ties, and rows without the value (no ppl, no
// histogram, NaN) after all others, keep the job's order. The uncompressed config (a search's level
// 0: the noise floor) stays on top, unsorted. Then keeps the first `top` rows besides it (0: all).
// Empty `metric`: the job's order, still cut to `top`. INVALID_ARGUMENT for an unknown metric
// (naming the choices), a negative `top`, or "ppl" when no row has a ppl (a job without `ppl:`).
Status SortResults(std::string_view metric, int top, v1::GetResultsResponse* response);

// Aligned columns: config, fdt75, fdt_mean, sdt_mean, dppl, probes, never_diverged (a percentage
// with one place, "-" without a histogram), plus ppl for a job with `ppl:` and level and rank when
// a search job's results carry them (rank blank for a node outside the beam). Incomplete configs
// get a '*' after their probe count, saturated configs (Fdt75Saturated) a '!' after their fdt75; a
// footnote says what each means. The noise floor shows its share without
// a mark: the uncompressed model never diverging is what it should do. The layer, component and
// method of the JSON and CSV are in the config column already and not repeated.
// Against a reference (reference_model_fingerprint set) the noise floor is labelled "(reference)"
// and shown beside the model's own "(uncompressed)" row, and a line under the table names the
// reference.
// With an allocation, a blank line and its table follow: component, params, current, extra,
// target (sparsities as percentages with two places, "5.38%"), predicted_fdt75 (two places), then
//   balanced allocation: step 10% (achieved 10.0000%), min predicted fdt75 41.30 of 64
// The CSV and JSON carry the exact fractions.
std::string FormatResultsTable(const v1::GetResultsResponse& response);

// One pretty-printed object:
//   {"job_id", "state", "noise_floor": {metrics} or null,
//    "results": [{"config", "fdt75", "fdt_mean", "sdt_mean", "dppl", "nll_mean", "num_probes",
//                 "fdt_histogram", "ppl"?, "never_diverged", "saturated", "complete",
//                 "layer", "component", "method", "search_level"?, "rank"?, "probe_results"?}],
//    "search_levels"?: [{"level", "nodes", "nodes_cached"}],
//    "reference_model_fingerprint"?: string (a job with `reference:`; noise_floor is then the reference's),
//    "allocation"?: {"method", "step", "achieved_step", "min_fdt75", "completion_len",
//                    "model_fingerprint", "num_layers",
//                    "components": [{"component", "params", "current", "extra", "target",
//                                    "predicted_fdt75"}]}}
// Numbers are JSON numbers printed so that they parse back to the same doubles; sparsities are
// fractions. never_diverged is a fraction (null without a histogram; the noise floor has it too),
// saturated is Fdt75Saturated; layer, component and method are those of a one-component config
// (SingleComponentOf) and null for others. A later sparsify-round reads this document back as its
// `previous:` file, so the allocation's key names are part of that format.
std::string FormatResultsJson(const v1::GetResultsResponse& response);

// Header `config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,
// ppl,search_level,rank,never_diverged,layer,component,method` (new columns are appended, never
// inserted), one row per config, fields quoted per RFC 4180 (canonical configs contain commas),
// lines ended by "\n" (not CRLF, so that cut and awk see clean last fields). The noise floor row
// has an empty config, or "(reference)" in a job with a reference (whose model's own uncompressed
// row has the empty config). Empty fields: ppl without `ppl:`, search_level and rank off a search's
// nodes (rank off its beams), never_diverged without a histogram, layer, component and method for
// a config that is not one component.
// With an allocation (a sparsify-round), the allocation instead of the probe configs: header
// `component,params,current,extra,target,predicted_fdt75`, one row per component, sparsities as
// fractions in the shortest form that parses back to the same double.
std::string FormatResultsCsv(const v1::GetResultsResponse& response);

std::string FormatResults(const v1::GetResultsResponse& response, ResultsFormat format);

// One CSV field: quoted (with quotes doubled) when it holds a comma, quote, CR or LF.
std::string CsvField(std::string_view field);

// The shortest decimal that parses back to the same double ("0.1", "37.25", "3", "0.0001"), in
// plain notation unless that would be long ("1e-30"); "nan"/"inf" for non-finite values.
std::string ShortestDouble(double value);

// "evaluate", "probe", "quant-search", "sparsify-round"; an unknown kind prints as its number.
std::string JobKindName(v1::JobKind kind);

// "running" etc. (what `dtmctl jobs --state` takes) to the enum; INVALID_ARGUMENT naming the value
// otherwise.
StatusOr<v1::JobState> ParseJobState(std::string_view name);

// Adds one GetResults page to `all`: its rows, and with the first page (sent_token empty) the other
// fields. Returns the token of the next page to ask for, "" after the last one (also when a server
// answers with the token just sent, which would loop forever).
std::string AppendResultsPage(v1::GetResultsResponse page, const std::string& sent_token, v1::GetResultsResponse* all);

// "2024-05-01T12:34:56Z" (UTC, whole seconds); "-" for an unset time.
std::string FormatUtc(const google::protobuf::Timestamp& t);

// Columns id, state, kind, name, done/total, created (UTC, "2024-05-01T12:34:56Z").
std::string FormatJobsTable(const std::vector<v1::Job>& jobs);

}  // namespace dtm::cli
