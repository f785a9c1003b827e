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

#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "dtm/v1/dtm_service.pb.h"

namespace dtm::cli {

enum class ResultsFormat { kTable, kJson, kCsv };

// "table", "json" or "csv".
StatusOr<ResultsFormat> ParseResultsFormat(std::string_view name);

// Aligned columns: config, fdt75, fdt_mean, sdt_mean, dppl, probes (plus level and rank when a
// search job's results carry them). Incomplete configs get a '*' after their probe count and a
// footnote says what it means.
// With an allocation, a blank line and its table follow: component, params, current, extra,
// target (sparsities as percentages with two places, "5.38%"), predicted_fdt75 (two places), then
//   balanced allocation: step 10% (achieved 10.0000%), min predicted fdt75 41.30 of 64
// The CSV and JSON carry the exact fractions.
std::string FormatResultsTable(const v1::GetResultsResponse& response);

// One pretty-printed object:
//   {"job_id", "state", "noise_floor": {metrics} or null,
//    "results": [{"config", "fdt75", "fdt_mean", "sdt_mean", "dppl", "nll_mean", "num_probes",
//                 "fdt_histogram", "ppl"?, "complete", "search_level"?, "rank"?, "probe_results"?}],
//    "search_levels"?: [{"level", "nodes", "nodes_cached"}],
//    "allocation"?: {"method", "step", "achieved_step", "min_fdt75", "completion_len",
//                    "model_fingerprint", "num_layers",
//                    "components": [{"component", "params", "current", "extra", "target",
//                                    "predicted_fdt75"}]}}
// Numbers are JSON numbers printed so that they parse back to the same doubles; sparsities are
// fractions. A later sparsify-round reads this document back as its `previous:` file, so the
// allocation's key names are part of that format.
std::string FormatResultsJson(const v1::GetResultsResponse& response);

// Header `config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete`, one row per config,
// fields quoted per RFC 4180 (canonical configs contain commas), lines ended by "\n" (not CRLF, so
// that cut and awk see clean last fields). The noise floor row has an empty config.
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

// Columns id, state, kind, name, done/total, created (UTC, "2024-05-01T12:34:56Z").
std::string FormatJobsTable(const std::vector<v1::Job>& jobs);

}  // namespace dtm::cli
