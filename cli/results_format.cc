#include "cli/results_format.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/progress_bar.h"
#include "common/components.h"

namespace dtm::cli {
namespace {

using Row = std::vector<std::string>;

constexpr const char* kUncompressedLabel = "(uncompressed)";
// The noise floor of a job with `reference:`: the reference against its own baseline.
constexpr const char* kReferenceLabel = "(reference)";

// Two spaces between columns, a dashed rule under the header (rows[0]); a column is padded on the
// left (numbers) or on the right (text) as `right_aligned` says. Trailing spaces are trimmed.
std::string AlignColumns(const std::vector<Row>& rows, const std::vector<bool>& right_aligned) {
  std::vector<size_t> widths;
  for (const Row& row : rows) {
    widths.resize(std::max(widths.size(), row.size()), 0);
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c].size());
  }
  auto render = [&](const Row& row) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string pad(widths[c] - row[c].size(), ' ');
      const bool right = c < right_aligned.size() && right_aligned[c];
      line += right ? pad + row[c] : row[c] + pad;
    }
    line.erase(line.find_last_not_of(' ') + 1);
    return line + "\n";
  };
  std::string out;
  for (size_t r = 0; r < rows.size(); ++r) {
    out += render(rows[r]);
    if (r == 0) {
      Row rule;
      for (size_t c = 0; c < rows[0].size(); ++c) rule.push_back(std::string(widths[c], '-'));
      out += render(rule);
    }
  }
  return out;
}

std::string Fixed(double value, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  return buf;
}

// A fraction as a percentage with `decimals` places: 0.05375 -> "5.38%".
std::string Percent(double fraction, int decimals) { return Fixed(fraction * 100, decimals) + "%"; }

// A round step as its user wrote it: 0.1 -> "10%", 0.025 -> "2.5%" (at most four places, so that the
// binary noise of fraction * 100 does not show).
std::string StepPercent(double fraction) {
  std::string text = Fixed(fraction * 100, 4);
  text.erase(text.find_last_not_of('0') + 1);
  if (!text.empty() && text.back() == '.') text.pop_back();
  return text + "%";
}

std::string ConfigLabel(const std::string& canonical) {
  return canonical.empty() ? kUncompressedLabel : canonical;
}

// The noise floor gets a row of its own unless it is unset or a result already is the uncompressed
// config (the same measurement, printed twice otherwise). Against a reference the two differ: the
// noise floor is the reference's, config "" the model's.
bool ShowNoiseFloor(const v1::GetResultsResponse& response) {
  if (!response.has_noise_floor() || response.noise_floor().num_probes() == 0) return false;
  if (!response.reference_model_fingerprint().empty()) return true;
  return std::none_of(response.results().begin(), response.results().end(),
                      [](const v1::ConfigResult& r) { return r.config().empty(); });
}

// How `results --sort` reads one metric; nullopt: the row has no such value.
struct SortKey {
  std::string_view name;
  bool higher_first;
  std::optional<double> (*value)(const v1::Metrics&);
};

const SortKey kSortKeys[] = {
    {"fdt75", true, [](const v1::Metrics& m) -> std::optional<double> { return m.fdt75(); }},
    {"fdt_mean", true, [](const v1::Metrics& m) -> std::optional<double> { return m.fdt_mean(); }},
    {"never_diverged", true, NeverDivergedShare},
    {"sdt_mean", false, [](const v1::Metrics& m) -> std::optional<double> { return m.sdt_mean(); }},
    {"dppl", false, [](const v1::Metrics& m) -> std::optional<double> { return m.dppl(); }},
    {"ppl", false,
     [](const v1::Metrics& m) { return m.has_ppl() ? std::optional<double>(m.ppl()) : std::nullopt; }},
    {"nll_mean", false, [](const v1::Metrics& m) -> std::optional<double> { return m.nll_mean(); }},
};

const SortKey* FindSortKey(std::string_view name) {
  for (const SortKey& key : kSortKeys) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

nlohmann::json MetricsJson(const v1::Metrics& m) {
  nlohmann::json j = {
      {"fdt75", m.fdt75()},
      {"fdt_mean", m.fdt_mean()},
      {"sdt_mean", m.sdt_mean()},
      {"dppl", m.dppl()},
      {"nll_mean", m.nll_mean()},
      {"num_probes", m.num_probes()},
      {"outlier_columns_mean", m.outlier_columns_mean()},
      {"fdt_histogram",
       nlohmann::json(std::vector<uint32_t>(m.fdt_histogram().begin(), m.fdt_histogram().end()))},
  };
  if (m.has_ppl()) j["ppl"] = m.ppl();
  const std::optional<double> never = NeverDivergedShare(m);
  j["never_diverged"] = never ? nlohmann::json(*never) : nlohmann::json(nullptr);
  return j;
}

nlohmann::json ProbeResultJson(const v1::ProbeResult& p) {
  return {{"probe_id", p.probe_id()},
          {"probe_index", p.probe_index()},
          {"fdt", p.fdt()},
          {"sdt", p.sdt()},
          {"nll", p.nll()},
          {"outlier_columns", p.outlier_columns()}};
}

nlohmann::json ConfigResultJson(const v1::ConfigResult& r) {
  nlohmann::json j = MetricsJson(r.metrics());
  j["config"] = r.config();
  j["complete"] = r.complete();
  j["saturated"] = Fdt75Saturated(r.metrics());
  const std::optional<SingleComponent> single = SingleComponentOf(r.config());
  j["layer"] = single ? nlohmann::json(single->layer) : nlohmann::json(nullptr);
  j["component"] = single ? nlohmann::json(single->component) : nlohmann::json(nullptr);
  j["method"] = single ? nlohmann::json(single->method) : nlohmann::json(nullptr);
  if (r.has_search_level()) j["search_level"] = r.search_level();
  if (r.has_rank()) j["rank"] = r.rank();
  if (r.dropped_by_racing()) j["dropped_by_racing"] = true;
  if (r.probe_results_size() > 0) {
    nlohmann::json rows = nlohmann::json::array();
    for (const v1::ProbeResult& p : r.probe_results()) rows.push_back(ProbeResultJson(p));
    j["probe_results"] = std::move(rows);
  }
  return j;
}

// `result` gives a search node its level and rank (empty for other rows and for the noise floor).
std::string CsvRow(const std::string& config, const v1::Metrics& m, bool complete,
                   const v1::ConfigResult* result = nullptr) {
  const bool node = result != nullptr && result->has_search_level();
  const std::optional<double> never = NeverDivergedShare(m);
  const std::optional<SingleComponent> single = SingleComponentOf(config);
  return CsvField(config) + "," + ShortestDouble(m.fdt75()) + "," + ShortestDouble(m.fdt_mean()) + "," +
         ShortestDouble(m.sdt_mean()) + "," + ShortestDouble(m.dppl()) + "," + ShortestDouble(m.nll_mean()) +
         "," + std::to_string(m.num_probes()) + "," + (complete ? "true" : "false") + "," +
         ShortestDouble(m.outlier_columns_mean()) + "," + (m.has_ppl() ? ShortestDouble(m.ppl()) : "") + "," +
         (node ? std::to_string(result->search_level()) : "") + "," +
         (node && result->has_rank() ? std::to_string(result->rank()) : "") + "," +
         (never ? ShortestDouble(*never) : "") + "," + (single ? std::to_string(single->layer) : "") + "," +
         (single ? CsvField(single->component) : "") + "," + (single ? CsvField(single->method) : "") + "\n";
}

// Whether any row (or the noise floor) has a ground-truth perplexity: a job with `ppl:`.
bool AnyPpl(const v1::GetResultsResponse& response) {
  return response.noise_floor().has_ppl() ||
         std::any_of(response.results().begin(), response.results().end(),
                     [](const v1::ConfigResult& r) { return r.metrics().has_ppl(); });
}

// The sparsify-round answer under the probes' table: one row per component, then a line with the
// round's method, step and the smallest predicted FDT75.
std::string AllocationTable(const v1::SparsityAllocation& allocation) {
  std::vector<Row> rows = {{"component", "params", "current", "extra", "target", "predicted_fdt75"}};
  for (const v1::ComponentSparsity& c : allocation.components()) {
    rows.push_back({c.component(), std::to_string(c.params()), Percent(c.current(), 2), Percent(c.extra(), 2),
                    Percent(c.target(), 2), Fixed(c.predicted_fdt75(), 2)});
  }
  std::string out = AlignColumns(rows, {false, true, true, true, true, true});
  out += (allocation.method().empty() ? std::string("allocation") : allocation.method() + " allocation") +
         ": step " + StepPercent(allocation.step()) + " (achieved " + Percent(allocation.achieved_step(), 4) +
         "), min predicted fdt75 " + Fixed(allocation.min_fdt75(), 2);
  if (allocation.completion_len() > 0) out += " of " + std::to_string(allocation.completion_len());
  return out + "\n";
}

// The keys a later round reads back from its `previous:` file: keep the names stable.
nlohmann::json AllocationJson(const v1::SparsityAllocation& allocation) {
  nlohmann::json components = nlohmann::json::array();
  for (const v1::ComponentSparsity& c : allocation.components()) {
    components.push_back({{"component", c.component()},
                          {"params", c.params()},
                          {"current", c.current()},
                          {"extra", c.extra()},
                          {"target", c.target()},
                          {"predicted_fdt75", c.predicted_fdt75()}});
  }
  return {{"method", allocation.method()},
          {"step", allocation.step()},
          {"achieved_step", allocation.achieved_step()},
          {"min_fdt75", allocation.min_fdt75()},
          {"completion_len", allocation.completion_len()},
          {"model_fingerprint", allocation.model_fingerprint()},
          {"num_layers", allocation.num_layers()},
          {"components", std::move(components)}};
}

// A train job's answer: what it made, then the loss curve at about 20 evenly spaced steps (and the
// last); `--format csv` has every step.
std::string TrainingTable(const v1::TrainingResult& t) {
  std::string out;
  if (t.losses_size() > 0) {
    out += "trained " + std::to_string(t.steps()) + " steps on a gang of " + std::to_string(t.gang_size()) +
           ": loss " + Fixed(t.losses(0), 4) + " -> " + Fixed(t.losses(t.losses_size() - 1), 4) + ", " +
           Fixed(t.tokens_per_second(), 0) + " tokens/s" +
           (t.resumed_from_step() == t.steps() ? " (the last attempt found the model written by an earlier one)"
            : t.resumed_from_step() > 0 ? " (the last attempt resumed at step " + std::to_string(t.resumed_from_step()) + ")"
                                        : "") +
           "\n";
  }
  out += "model: " + t.output_dir() + " (fingerprint " + t.output_fingerprint() + ")\n";
  out += "data: fingerprint " + t.data_fingerprint() + "; weights held at 0 by the masks: " +
         std::to_string(t.masked_weights()) + "\n";
  std::vector<Row> rows = {{"step", "loss"}};
  const int n = t.losses_size();
  const int every = std::max(1, (n + 19) / 20);
  for (int i = 0; i < n; ++i) {
    if (i % every == 0 || i == n - 1) rows.push_back({std::to_string(i + 1), Fixed(t.losses(i), 4)});
  }
  if (n > 0) out += "\n" + AlignColumns(rows, {true, true});
  return out;
}

// The written model's exact zeros per component: {component: {zeros, params}}.
nlohmann::json OutputZerosJson(const v1::TrainingResult& t) {
  nlohmann::json zeros = nlohmann::json::object();
  for (const v1::ComponentZeros& z : t.output_zeros()) zeros[z.component()] = {{"zeros", z.zeros()}, {"params", z.params()}};
  return zeros;
}

nlohmann::json TrainingJson(const v1::TrainingResult& t) {
  return {{"steps", t.steps()},
          {"losses", std::vector<double>(t.losses().begin(), t.losses().end())},
          {"tokens_per_second", t.tokens_per_second()},
          {"gang_size", t.gang_size()},
          {"resumed_from_step", t.resumed_from_step()},
          {"output_dir", t.output_dir()},
          {"output_fingerprint", t.output_fingerprint()},
          {"data_fingerprint", t.data_fingerprint()},
          {"masked_weights", t.masked_weights()},
          {"output_zeros", OutputZerosJson(t)}};
}


}  // namespace

std::string FormatUtc(const google::protobuf::Timestamp& t) {
  if (t.seconds() == 0 && t.nanos() == 0) return "-";
  const std::time_t seconds = static_cast<std::time_t>(t.seconds());
  std::tm tm{};
  if (gmtime_r(&seconds, &tm) == nullptr) return "-";
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string AppendResultsPage(v1::GetResultsResponse page, const std::string& sent_token, v1::GetResultsResponse* all) {
  auto rows = std::move(*page.mutable_results());
  page.clear_results();
  std::string next = page.next_page_token() == sent_token ? "" : page.next_page_token();
  if (sent_token.empty()) {
    *all = std::move(page);
    all->clear_next_page_token();
  }
  for (v1::ConfigResult& row : rows) *all->add_results() = std::move(row);
  return next;
}

std::optional<double> NeverDivergedShare(const v1::Metrics& m) {
  if (m.num_probes() == 0 || m.fdt_histogram().empty()) return std::nullopt;
  return static_cast<double>(m.fdt_histogram(m.fdt_histogram_size() - 1)) / m.num_probes();
}

bool Fdt75Saturated(const v1::Metrics& m) {
  if (m.num_probes() == 0 || m.fdt_histogram().empty()) return false;
  return m.fdt75() >= static_cast<double>(m.fdt_histogram_size() - 1);
}

std::optional<SingleComponent> SingleComponentOf(std::string_view config) {
  const size_t eq = config.find('=');
  // Methods hold neither ',' nor '=': a second component would show as either.
  if (eq == std::string_view::npos || config.find(',') != std::string_view::npos ||
      config.find('=', eq + 1) != std::string_view::npos || eq + 1 == config.size()) {
    return std::nullopt;
  }
  // The client does not know the model's depth: any layer index parses.
  StatusOr<ComponentId> id = ParseComponentName(config.substr(0, eq), std::numeric_limits<int>::max());
  if (!id.ok()) return std::nullopt;
  return SingleComponent{id->layer, std::string(ComponentKindSuffix(id->kind)),
                         std::string(config.substr(eq + 1))};
}

Status CheckSortMetric(std::string_view metric) {
  if (FindSortKey(metric) != nullptr) return OkStatus();
  return InvalidArgumentError("--sort: unknown metric '" + std::string(metric) + "' (" + kSortMetricsHelp +
                              ")");
}

Status SortResults(std::string_view metric, int top, v1::GetResultsResponse* response) {
  if (top < 0) return InvalidArgumentError("--top: must be at least 1, got " + std::to_string(top));
  if (!metric.empty()) RETURN_IF_ERROR(CheckSortMetric(metric));
  if (metric == "ppl" && !AnyPpl(*response)) {
    return InvalidArgumentError("--sort ppl: job " + response->job_id() +
                                " has no ppl (its spec has no `ppl:` section); sort by dppl instead");
  }
  auto* results = response->mutable_results();
  // The uncompressed config stays on top; the others are ordered and cut.
  auto pinned = std::stable_partition(results->begin(), results->end(),
                                      [](const v1::ConfigResult& r) { return r.config().empty(); });
  const int first = static_cast<int>(pinned - results->begin());
  if (!metric.empty()) {
    const SortKey* key = FindSortKey(metric);
    // A row without probes has no metrics yet, though its fields read 0.
    auto value = [key](const v1::ConfigResult& r) -> std::optional<double> {
      if (r.metrics().num_probes() == 0) return std::nullopt;
      std::optional<double> v = key->value(r.metrics());
      return v && !std::isnan(*v) ? v : std::nullopt;
    };
    std::stable_sort(pinned, results->end(), [&](const v1::ConfigResult& a, const v1::ConfigResult& b) {
      const std::optional<double> va = value(a), vb = value(b);
      if (!va || !vb) return va.has_value() && !vb.has_value();
      return key->higher_first ? *va > *vb : *va < *vb;
    });
  }
  if (top > 0 && results->size() - first > top) {
    results->DeleteSubrange(first + top, results->size() - first - top);
  }
  return OkStatus();
}

StatusOr<ResultsFormat> ParseResultsFormat(std::string_view name) {
  if (name == "table") return ResultsFormat::kTable;
  if (name == "json") return ResultsFormat::kJson;
  if (name == "csv") return ResultsFormat::kCsv;
  return InvalidArgumentError("--format: unknown format '" + std::string(name) + "' (table, json or csv)");
}

// A round's average sparsity as allocated (parameter-weighted targets) and as its trained model holds
// it (the weights its masks kept at 0, over the same parameters); -1 when unknown.
std::pair<double, double> RoundSparsity(const v1::SparsifyRoundResult& round) {
  double params = 0, target = 0;
  for (const v1::ComponentSparsity& c : round.allocation().components()) {
    params += static_cast<double>(c.params());
    target += static_cast<double>(c.params()) * c.target();
  }
  if (params == 0) return {-1, -1};
  return {target / params, round.has_training() ? static_cast<double>(round.training().masked_weights()) / params : -1};
}

// The run's output as measured (the last round's written model, re-masked) against its targets: the
// average and the largest difference of any component, in weights. "" before the last round trained.
std::string FinalSparsityLine(const v1::GetResultsResponse& response) {
  if (response.rounds_size() == 0) return "";
  const v1::SparsifyRoundResult& last = response.rounds(response.rounds_size() - 1);
  if (last.training().output_zeros_size() == 0 || !last.has_allocation()) return "";
  std::map<std::string, double> targets;
  for (const v1::ComponentSparsity& c : last.allocation().components()) targets[c.component()] = c.target();
  double zeros = 0, params = 0, worst = 0;
  std::string worst_component;
  for (const v1::ComponentZeros& z : last.training().output_zeros()) {
    auto target = targets.find(z.component());
    if (target == targets.end()) continue;
    zeros += static_cast<double>(z.zeros());
    params += static_cast<double>(z.params());
    const double off = std::abs(static_cast<double>(z.zeros()) - target->second * static_cast<double>(z.params()));
    if (off >= worst) {
      worst = off;
      worst_component = z.component();
    }
  }
  if (params == 0) return "";
  return "final model " + last.training().output_dir() + ": " + Percent(zeros / params, 4) +
         " of the pruned components' weights are exactly 0; largest difference from a component's target: " +
         Fixed(worst, 1) + " weights (" + worst_component + ")\n";
}

// A sparsify run's answer: a line per round (its step, the average sparsity allocated and measured,
// the training loss, the round model against the starting model, each stage's wall time).
std::string SparsifyRunTable(const v1::GetResultsResponse& response) {
  const bool ppl = std::any_of(response.rounds().begin(), response.rounds().end(),
                               [](const v1::SparsifyRoundResult& r) { return r.metrics().has_ppl(); });
  Row header = {"round", "step", "sparsity", "measured", "loss", "fdt75", "fdt_mean", "sdt_mean", "dppl"};
  if (ppl) header.push_back("ppl");
  header.insert(header.end(), {"probe_s", "train_s", "eval_s", "model"});
  std::vector<Row> rows = {header};
  for (const v1::SparsifyRoundResult& r : response.rounds()) {
    const auto [allocated, measured] = RoundSparsity(r);
    const v1::TrainingResult& t = r.training();
    const v1::Metrics& m = r.metrics();
    const bool evaluated = r.has_metrics() && m.num_probes() > 0;
    auto seconds = [](double s) { return s > 0 ? Fixed(s, 1) : std::string("-"); };
    Row row = {std::to_string(r.round()),
               r.has_allocation() ? StepPercent(r.allocation().step()) : "-",
               allocated >= 0 ? Percent(allocated, 2) : "-",
               measured >= 0 ? Percent(measured, 2) : "-",
               t.losses_size() > 0 ? Fixed(t.losses(0), 3) + " -> " + Fixed(t.losses(t.losses_size() - 1), 3) : "-",
               evaluated ? Fixed(m.fdt75(), 2) : "-",
               evaluated ? Fixed(m.fdt_mean(), 2) : "-",
               evaluated ? Fixed(m.sdt_mean(), 2) : "-",
               evaluated ? Fixed(m.dppl(), 4) : "-"};
    if (ppl) row.push_back(evaluated && m.has_ppl() ? Fixed(m.ppl(), 3) : "-");
    row.insert(row.end(), {r.probe_job_id().empty() ? "-" : seconds(r.probe_seconds()), seconds(r.train_seconds()),
                           seconds(r.evaluate_seconds()),
                           t.output_dir().empty() ? "-" : t.output_dir() + " (" + t.output_fingerprint().substr(0, 12) + ")"});
    rows.push_back(std::move(row));
  }
  std::vector<bool> right(header.size(), true);
  right.back() = false;
  std::string out = AlignColumns(rows, right);
  out += FinalSparsityLine(response);
  out += "metrics: each round's model against the starting model's completions; "
         "`dtmctl export-config JOB --round N` prints a round's prune targets\n";
  return out;
}

nlohmann::json SparsifyRoundsJson(const v1::GetResultsResponse& response) {
  nlohmann::json rounds = nlohmann::json::array();
  for (const v1::SparsifyRoundResult& r : response.rounds()) {
    const auto [allocated, measured] = RoundSparsity(r);
    nlohmann::json round = {{"round", r.round()},
                            {"input_model", r.input_model()},
                            {"probe_job_id", r.probe_job_id()},
                            {"train_job_id", r.train_job_id()},
                            {"evaluate_job_id", r.evaluate_job_id()},
                            {"probe_seconds", r.probe_seconds()},
                            {"train_seconds", r.train_seconds()},
                            {"evaluate_seconds", r.evaluate_seconds()}};
    round["allocation"] = r.has_allocation() ? AllocationJson(r.allocation()) : nlohmann::json(nullptr);
    round["sparsity"] = allocated >= 0 ? nlohmann::json(allocated) : nlohmann::json(nullptr);
    round["measured_sparsity"] = measured >= 0 ? nlohmann::json(measured) : nlohmann::json(nullptr);
    round["training"] = r.has_training() ? TrainingJson(r.training()) : nlohmann::json(nullptr);
    // The round's written model per component (after a re-masked last round, the run's output).
    nlohmann::json written = nlohmann::json::object();
    for (const v1::ComponentZeros& z : r.training().output_zeros()) {
      if (z.params() > 0) written[z.component()] = static_cast<double>(z.zeros()) / static_cast<double>(z.params());
    }
    round["output_sparsity"] = std::move(written);
    round["metrics"] = r.has_metrics() ? MetricsJson(r.metrics()) : nlohmann::json(nullptr);
    rounds.push_back(std::move(round));
  }
  return rounds;
}

namespace {

// "20 after 16 probes, 2 after 32".
std::string DropsText(const google::protobuf::RepeatedPtrField<v1::RacingDrop>& drops) {
  std::string out;
  for (const v1::RacingDrop& d : drops) {
    if (!out.empty()) out += ", ";
    out += std::to_string(d.nodes()) + " after " + std::to_string(d.probes()) + (out.empty() ? " probes" : "");
  }
  return out;
}

// What a race spent and dropped, in a line, and what the parameters were.
std::string RacingText(const v1::RacingSummary& racing) {
  const double share = racing.exact_probe_evaluations() == 0
                           ? 0.0
                           : static_cast<double>(racing.probe_evaluations()) /
                                 static_cast<double>(racing.exact_probe_evaluations());
  std::string out = "racing: " + std::to_string(racing.probe_evaluations()) + " of " +
                    std::to_string(racing.exact_probe_evaluations()) + " probe evaluations (" + Percent(share, 1) +
                    ") of an evaluation of the same configs on every probe; " +
                    std::to_string(racing.nodes_dropped()) + " configs dropped";
  if (racing.drops_size() > 0) out += " (" + DropsText(racing.drops()) + ")";
  char bounds[200];
  std::snprintf(bounds, sizeof bounds,
                "; first %u probes, %u more per round, bounds at confidence %g, epsilon %g\n",
                racing.first_probes(), racing.step_probes(), racing.confidence(), racing.epsilon());
  return out + bounds;
}

}  // namespace

std::string FormatResultsTable(const v1::GetResultsResponse& response) {
  if (response.has_training()) return TrainingTable(response.training());
  if (response.rounds_size() > 0) return SparsifyRunTable(response);
  const bool search = std::any_of(response.results().begin(), response.results().end(),
                                  [](const v1::ConfigResult& r) { return r.has_search_level(); });
  const bool ppl = AnyPpl(response);
  Row header = {"config", "fdt75", "fdt_mean", "sdt_mean", "dppl", "probes", "never_diverged"};
  if (ppl) header.insert(header.begin() + 5, "ppl");
  if (search) header.insert(header.end(), {"level", "rank"});
  std::vector<Row> rows = {header};
  const bool any_incomplete = std::any_of(response.results().begin(), response.results().end(),
                                          [](const v1::ConfigResult& r) { return !r.complete(); });
  // The uncompressed model never diverging is what it should do: no mark on it.
  const bool any_saturated =
      std::any_of(response.results().begin(), response.results().end(),
                  [](const v1::ConfigResult& r) { return !r.config().empty() && Fdt75Saturated(r.metrics()); });
  // Rows without a mark end with a space where others have '*' or '!', so the digits line up.
  const std::string complete_mark = any_incomplete ? " " : "";
  const std::string unsaturated_mark = any_saturated ? " " : "";
  const bool any_dropped = std::any_of(response.results().begin(), response.results().end(),
                                       [](const v1::ConfigResult& r) { return r.dropped_by_racing(); });
  auto add_row = [&](const std::string& label, const v1::Metrics& m, bool complete, bool config, bool dropped) {
    const std::optional<double> never = NeverDivergedShare(m);
    // A config with no probe in yet (`--partial` on a running job) has no metrics: 0.00 would read
    // as total divergence.
    const bool none = m.num_probes() == 0;
    rows.push_back({label,
                    none ? "-" + unsaturated_mark
                         : Fixed(m.fdt75(), 2) + (config && Fdt75Saturated(m) ? "!" : unsaturated_mark),
                    none ? "-" : Fixed(m.fdt_mean(), 2), none ? "-" : Fixed(m.sdt_mean(), 2),
                    none ? "-" : Fixed(m.dppl(), 4), std::to_string(m.num_probes()) + (dropped ? "x" : complete ? complete_mark : "*"),
                    never ? Percent(*never, 1) : "-"});
    if (ppl) rows.back().insert(rows.back().begin() + 5, m.has_ppl() && !none ? Fixed(m.ppl(), 4) : "");
  };
  const bool reference = !response.reference_model_fingerprint().empty();
  if (ShowNoiseFloor(response)) {
    add_row(reference ? kReferenceLabel : kUncompressedLabel, response.noise_floor(), true, /*config=*/false,
            /*dropped=*/false);
    if (search) rows.back().insert(rows.back().end(), {"", ""});
  }
  for (const v1::ConfigResult& r : response.results()) {
    add_row(ConfigLabel(r.config()), r.metrics(), r.complete(), !r.config().empty(), r.dropped_by_racing());
    if (search) {
      rows.back().push_back(r.has_search_level() ? std::to_string(r.search_level()) : "");
      rows.back().push_back(r.has_rank() ? std::to_string(r.rank()) : "");
    }
  }
  std::vector<bool> right_aligned(header.size(), true);
  right_aligned[0] = false;
  std::string out = AlignColumns(rows, right_aligned);
  if (any_incomplete && std::any_of(response.results().begin(), response.results().end(), [](const v1::ConfigResult& r) {
        return !r.complete() && !r.dropped_by_racing();
      })) {
    out += response.has_racing()
               ? "* incomplete: metrics cover the first probes only (shards outstanding, or the race decided before "
                 "every probe)\n"
               : "* incomplete: shards outstanding, metrics cover the probes so far\n";
  }
  if (any_dropped) out += "x dropped by racing: metrics cover the first probes only\n";
  if (any_saturated) {
    out += "! saturated: fdt75 is the completion length (more than a quarter of the probes never diverged) and "
           "cannot rank these configs; compare fdt_mean, or use a longer completion, more probes or a harsher "
           "method\n";
  }
  if (reference) {
    out += "baseline: the greedy completions of the reference " + response.reference_model_fingerprint().substr(0, 12) +
           "; " + kReferenceLabel + " is it against itself, every other row the job's model against it\n";
  }
  if (!response.rank_by().empty()) out += "levels ranked by " + response.rank_by() + "\n";
  for (const v1::SearchLevel& level : response.search_levels()) {
    out += "level " + std::to_string(level.level()) + ": " + std::to_string(level.nodes()) + " nodes evaluated, " +
           std::to_string(level.nodes_cached()) + " from the cache";
    if (response.has_racing()) {
      out += ", " + std::to_string(level.nodes_dropped()) + " dropped by racing";
      if (level.drops_size() > 0) out += " (" + DropsText(level.drops()) + ")";
      out += ", " + std::to_string(level.probe_evaluations()) + " probe evaluations";
    }
    out += "\n";
  }
  if (response.has_racing()) out += RacingText(response.racing());
  if (response.has_allocation()) out += "\n" + AllocationTable(response.allocation());
  return out;
}

namespace {

nlohmann::json DropsJson(const google::protobuf::RepeatedPtrField<v1::RacingDrop>& drops) {
  nlohmann::json out = nlohmann::json::array();
  for (const v1::RacingDrop& d : drops) out.push_back({{"probes", d.probes()}, {"nodes", d.nodes()}});
  return out;
}

}  // namespace

std::string FormatResultsJson(const v1::GetResultsResponse& response) {
  nlohmann::json results = nlohmann::json::array();
  for (const v1::ConfigResult& r : response.results()) results.push_back(ConfigResultJson(r));
  nlohmann::json doc = {
      {"job_id", response.job_id()},
      {"state", JobStateName(response.state())},
      {"noise_floor",
       response.has_noise_floor() ? MetricsJson(response.noise_floor()) : nlohmann::json(nullptr)},
      {"results", std::move(results)},
  };
  nlohmann::json levels = nlohmann::json::array();
  for (const v1::SearchLevel& level : response.search_levels()) {
    levels.push_back({{"level", level.level()}, {"nodes", level.nodes()}, {"nodes_cached", level.nodes_cached()}});
    if (response.has_racing()) {
      levels.back()["nodes_dropped"] = level.nodes_dropped();
      levels.back()["drops"] = DropsJson(level.drops());
      levels.back()["probe_evaluations"] = level.probe_evaluations();
    }
  }
  if (!levels.empty()) doc["search_levels"] = std::move(levels);
  if (!response.rank_by().empty()) doc["rank_by"] = response.rank_by();
  if (response.has_racing()) {
    const v1::RacingSummary& r = response.racing();
    doc["racing"] = {{"probe_evaluations", r.probe_evaluations()},
                     {"exact_probe_evaluations", r.exact_probe_evaluations()},
                     {"nodes_dropped", r.nodes_dropped()},
                     {"drops", DropsJson(r.drops())},
                     {"first_probes", r.first_probes()},
                     {"step_probes", r.step_probes()},
                     {"confidence", r.confidence()},
                     {"epsilon", r.epsilon()}};
  }
  if (!response.reference_model_fingerprint().empty()) {
    doc["reference_model_fingerprint"] = response.reference_model_fingerprint();
  }
  if (response.has_allocation()) doc["allocation"] = AllocationJson(response.allocation());
  if (response.has_training()) doc["training"] = TrainingJson(response.training());
  if (response.rounds_size() > 0) doc["rounds"] = SparsifyRoundsJson(response);
  if (response.warnings_size() > 0) {
    doc["warnings"] = std::vector<std::string>(response.warnings().begin(), response.warnings().end());
  }
  return doc.dump(2) + "\n";
}

std::string FormatResultsCsv(const v1::GetResultsResponse& response) {
  if (response.has_training()) {
    std::string out = "step,loss\n";
    for (int i = 0; i < response.training().losses_size(); ++i) {
      out += std::to_string(i + 1) + "," + ShortestDouble(response.training().losses(i)) + "\n";
    }
    return out;
  }
  if (response.rounds_size() > 0) {
    std::string out =
        "round,step,sparsity,measured_sparsity,first_loss,last_loss,fdt75,fdt_mean,sdt_mean,dppl,ppl,probe_seconds,"
        "train_seconds,evaluate_seconds,model_fingerprint\n";
    for (const v1::SparsifyRoundResult& r : response.rounds()) {
      const auto [allocated, measured] = RoundSparsity(r);
      const v1::TrainingResult& t = r.training();
      const v1::Metrics& m = r.metrics();
      const bool evaluated = r.has_metrics() && m.num_probes() > 0;
      auto number = [](bool known, double v) { return known ? ShortestDouble(v) : std::string(); };
      out += std::to_string(r.round()) + "," + number(r.has_allocation(), r.allocation().step()) + "," +
             number(allocated >= 0, allocated) + "," + number(measured >= 0, measured) + "," +
             number(t.losses_size() > 0, t.losses_size() > 0 ? t.losses(0) : 0) + "," +
             number(t.losses_size() > 0, t.losses_size() > 0 ? t.losses(t.losses_size() - 1) : 0) + "," +
             number(evaluated, m.fdt75()) + "," + number(evaluated, m.fdt_mean()) + "," +
             number(evaluated, m.sdt_mean()) + "," + number(evaluated, m.dppl()) + "," +
             number(evaluated && m.has_ppl(), m.ppl()) + "," + ShortestDouble(r.probe_seconds()) + "," +
             ShortestDouble(r.train_seconds()) + "," + ShortestDouble(r.evaluate_seconds()) + "," +
             CsvField(t.output_fingerprint()) + "\n";
    }
    return out;
  }
  if (response.has_allocation()) {
    std::string out = "component,params,current,extra,target,predicted_fdt75\n";
    for (const v1::ComponentSparsity& c : response.allocation().components()) {
      out += CsvField(c.component()) + "," + std::to_string(c.params()) + "," + ShortestDouble(c.current()) +
             "," + ShortestDouble(c.extra()) + "," + ShortestDouble(c.target()) + "," +
             ShortestDouble(c.predicted_fdt75()) + "\n";
    }
    return out;
  }
  // New columns go last, so that readers of the older columns by position are unaffected; ppl is
  // empty for a job without `ppl:`, search_level and rank for anything but a search's nodes (rank
  // for its nodes outside the beams), never_diverged without a histogram, layer, component and
  // method for a config that is not one component.
  std::string out =
      "config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,ppl,search_level,rank,"
      "never_diverged,layer,component,method\n";
  // The coordinator sends the noise floor once the uncompressed model's shards are all in.
  // Against a reference its noise floor is labelled, since config "" is then the model's own row.
  if (ShowNoiseFloor(response)) {
    out += CsvRow(response.reference_model_fingerprint().empty() ? "" : kReferenceLabel, response.noise_floor(), true);
  }
  for (const v1::ConfigResult& r : response.results()) out += CsvRow(r.config(), r.metrics(), r.complete(), &r);
  return out;
}

std::string FormatResults(const v1::GetResultsResponse& response, ResultsFormat format) {
  switch (format) {
    case ResultsFormat::kJson:
      return FormatResultsJson(response);
    case ResultsFormat::kCsv:
      return FormatResultsCsv(response);
    case ResultsFormat::kTable:
      break;
  }
  return FormatResultsTable(response);
}

std::string CsvField(std::string_view field) {
  if (field.find_first_of(",\"\r\n") == std::string_view::npos) return std::string(field);
  std::string quoted = "\"";
  for (char c : field) {
    if (c == '"') quoted += '"';
    quoted += c;
  }
  return quoted + "\"";
}

std::string ShortestDouble(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  char buf[64];
  // Plain decimals ("0.0001", not "1e-04") read better in a spreadsheet; exponents only where the
  // plain form would be long.
  auto result = std::to_chars(buf, buf + sizeof buf, value, std::chars_format::fixed);
  if (result.ec == std::errc() && result.ptr - buf <= 20) return std::string(buf, result.ptr);
  result = std::to_chars(buf, buf + sizeof buf, value);
  return std::string(buf, result.ptr);
}

std::string JobKindName(v1::JobKind kind) {
  switch (kind) {
    case v1::JOB_KIND_UNSPECIFIED:
      return "unspecified";
    case v1::JOB_KIND_EVALUATE:
      return "evaluate";
    case v1::JOB_KIND_PROBE:
      return "probe";
    case v1::JOB_KIND_QUANT_SEARCH:
      return "quant-search";
    case v1::JOB_KIND_SPARSIFY_ROUND:
      return "sparsify-round";
    case v1::JOB_KIND_TRAIN:
      return "train";
    case v1::JOB_KIND_SPARSIFY:
      return "sparsify";
    default:
      return std::to_string(static_cast<int>(kind));
  }
}

StatusOr<v1::JobState> ParseJobState(std::string_view name) {
  if (name == "pending") return v1::JOB_STATE_PENDING;
  if (name == "running") return v1::JOB_STATE_RUNNING;
  if (name == "succeeded") return v1::JOB_STATE_SUCCEEDED;
  if (name == "failed") return v1::JOB_STATE_FAILED;
  if (name == "cancelled") return v1::JOB_STATE_CANCELLED;
  return InvalidArgumentError("--state: unknown state '" + std::string(name) +
                              "' (pending, running, succeeded, failed or cancelled)");
}

std::string FormatJobsTable(const std::vector<v1::Job>& jobs) {
  std::vector<Row> rows = {{"id", "state", "kind", "name", "done/total", "created", "why"}};
  for (const v1::Job& job : jobs) {
    // What an unfinished job does or waits for (a PENDING 0/0 job says which model it waits for),
    // why a failed or cancelled one ended; one line, cut to stay a table.
    std::string why = job.state() == v1::JOB_STATE_FAILED || job.state() == v1::JOB_STATE_CANCELLED
                          ? job.error().message()
                          : job.progress().message();
    std::replace(why.begin(), why.end(), '\n', ' ');
    if (why.size() > 100) why = why.substr(0, 97) + "...";
    rows.push_back(
        {job.job_id(), JobStateName(job.state()), JobKindName(job.summary().kind()),
         job.summary().name().empty() ? "-" : job.summary().name(),
         std::to_string(job.progress().tasks_done()) + "/" + std::to_string(job.progress().tasks_total()),
         FormatUtc(job.create_time()), why.empty() ? "-" : why});
  }
  return AlignColumns(rows, {false, false, false, false, true, false, false});
}

}  // namespace dtm::cli
