// `dtmctl results` beyond the plain listing (issue 13, "answers, ranked and warned"): --sort and
// --top, the share of probes that never diverged and the saturation mark, and the layer, component
// and method of one-component configs, from hand-built messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/results_format.h"

namespace dtm::cli {
namespace {

using ::testing::HasSubstr;

// NumPy's default quantile (R type 7), written out here: linear between order statistics.
double Type7Quantile(std::vector<uint32_t> values, double q) {
  std::sort(values.begin(), values.end());
  const double h = q * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(h));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  return values[lo] + (h - static_cast<double>(lo)) * (static_cast<double>(values[hi]) - values[lo]);
}

// Metrics of probes with these FDTs under completion length `completion`, as the coordinator
// aggregates them (fdt75, fdt_mean, histogram of completion + 1 bins).
v1::Metrics FromFdts(const std::vector<uint32_t>& fdts, uint32_t completion) {
  v1::Metrics m;
  std::vector<uint32_t> histogram(completion + 1, 0);
  double sum = 0;
  for (uint32_t fdt : fdts) {
    ++histogram[fdt];
    sum += fdt;
  }
  for (uint32_t count : histogram) m.add_fdt_histogram(count);
  m.set_num_probes(static_cast<uint32_t>(fdts.size()));
  m.set_fdt_mean(sum / static_cast<double>(fdts.size()));
  m.set_fdt75(Type7Quantile(fdts, 0.75));
  return m;
}

// `never` probes at the completion length 32, the rest diverging at token 3.
v1::Metrics WithNeverDiverged(uint32_t probes, uint32_t never) {
  std::vector<uint32_t> fdts(probes, 3);
  std::fill(fdts.begin(), fdts.begin() + never, 32);
  return FromFdts(fdts, 32);
}

std::vector<std::string> Configs(const v1::GetResultsResponse& response) {
  std::vector<std::string> out;
  for (const v1::ConfigResult& r : response.results()) out.push_back(r.config());
  return out;
}

TEST(ResultsViewTest, NeverDivergedIsTheLastHistogramBinOverTheProbes) {
  v1::Metrics m;
  for (uint32_t count : {1u, 0u, 2u, 5u}) m.add_fdt_histogram(count);
  m.set_num_probes(8);
  ASSERT_TRUE(NeverDivergedShare(m).has_value());
  EXPECT_EQ(*NeverDivergedShare(m), 5.0 / 8.0);
  EXPECT_EQ(*NeverDivergedShare(WithNeverDiverged(64, 23)), 23.0 / 64.0);
  v1::Metrics no_histogram;
  no_histogram.set_num_probes(8);
  EXPECT_FALSE(NeverDivergedShare(no_histogram).has_value());
  v1::Metrics no_probes;
  no_probes.add_fdt_histogram(0);
  EXPECT_FALSE(NeverDivergedShare(no_probes).has_value());
}

// A constructed baseline: of 64 probes, 16 never diverging (exactly a quarter) leave fdt75 between
// the order statistics 47 and 48, a quarter of the way to the completion length; 17 put it there.
TEST(ResultsViewTest, Fdt75IsSaturatedExactlyWhenItIsTheCompletionLength) {
  const v1::Metrics quarter = WithNeverDiverged(64, 16);
  EXPECT_EQ(quarter.fdt75(), 3 + 0.25 * (32 - 3));
  EXPECT_FALSE(Fdt75Saturated(quarter));
  const v1::Metrics more = WithNeverDiverged(64, 17);
  EXPECT_EQ(more.fdt75(), 32);
  EXPECT_TRUE(Fdt75Saturated(more));
  EXPECT_TRUE(Fdt75Saturated(WithNeverDiverged(64, 64)));
  EXPECT_FALSE(Fdt75Saturated(WithNeverDiverged(64, 0)));
  v1::Metrics no_histogram;
  no_histogram.set_num_probes(4);
  no_histogram.set_fdt75(32);
  EXPECT_FALSE(Fdt75Saturated(no_histogram));
}

TEST(ResultsViewTest, TakesApartConfigsOfExactlyOneComponent) {
  std::optional<SingleComponent> c = SingleComponentOf("model.layers.3.mlp.up_proj=gptq:4:g128");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->layer, 3);
  EXPECT_EQ(c->component, "mlp.up_proj");
  EXPECT_EQ(c->method, "gptq:4:g128");
  c = SingleComponentOf("model.layers.117.self_attn.q_proj=random-prune:0.1:7");
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->layer, 117);
  EXPECT_EQ(c->component, "self_attn.q_proj");
  EXPECT_EQ(c->method, "random-prune:0.1:7");
  for (const char* other : {"", "model.layers.0.mlp.up_proj=int8-absmax,model.layers.1.mlp.down_proj=prune:0.5",
                            "c.a=int8-absmax", "model.layers.3.mlp.up_proj", "model.layers.3.mlp.up_proj=",
                            "model.layers.3.mlp.sideways_proj=int8-absmax", "model.layers.x.mlp.up_proj=llm-int8"}) {
    EXPECT_FALSE(SingleComponentOf(other).has_value()) << other;
  }
}

// A probe job's results: the noise floor, two single components and a pair, on 4 probes with
// completion length 4 (five bins).
v1::GetResultsResponse ProbeResults() {
  v1::GetResultsResponse response;
  response.set_job_id("j-5");
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  *response.mutable_noise_floor() = FromFdts({4, 4, 4, 4}, 4);
  auto add = [&](const std::string& config, const std::vector<uint32_t>& fdts, double dppl) {
    v1::ConfigResult* r = response.add_results();
    r->set_config(config);
    *r->mutable_metrics() = FromFdts(fdts, 4);
    r->mutable_metrics()->set_dppl(dppl);
    r->set_complete(true);
  };
  add("model.layers.0.mlp.up_proj=int8-absmax", {1, 2, 2, 3}, 1.5);
  add("model.layers.1.self_attn.k_proj=prune:0.5", {0, 1, 4, 4}, 2.5);
  add("model.layers.0.mlp.up_proj=int8-absmax,model.layers.1.mlp.down_proj=prune:0.5", {0, 0, 1, 2}, 4.25);
  return response;
}

TEST(ResultsViewTest, CsvAppendsNeverDivergedLayerComponentAndMethod) {
  const std::string csv = FormatResultsCsv(ProbeResults());
  EXPECT_EQ(csv,
            "config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,ppl,search_level,"
            "rank,never_diverged,layer,component,method\n"
            ",4,4,0,0,0,4,true,0,,,,1,,,\n"
            "model.layers.0.mlp.up_proj=int8-absmax,2.25,2,0,1.5,0,4,true,0,,,,0,0,mlp.up_proj,int8-absmax\n"
            "model.layers.1.self_attn.k_proj=prune:0.5,4,2.25,0,2.5,0,4,true,0,,,,0.5,1,self_attn.k_proj,prune:0.5\n"
            "\"model.layers.0.mlp.up_proj=int8-absmax,model.layers.1.mlp.down_proj=prune:0.5\","
            "1.25,0.75,0,4.25,0,4,true,0,,,,0,,,\n");
}

TEST(ResultsViewTest, JsonCarriesNeverDivergedSaturationAndTheComponentOfEachRow) {
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(ProbeResults()));
  EXPECT_EQ(doc["noise_floor"]["never_diverged"].get<double>(), 1.0);
  const nlohmann::json& rows = doc["results"];
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0]["layer"], 0);
  EXPECT_EQ(rows[0]["component"], "mlp.up_proj");
  EXPECT_EQ(rows[0]["method"], "int8-absmax");
  EXPECT_EQ(rows[0]["never_diverged"].get<double>(), 0.0);
  EXPECT_EQ(rows[0]["saturated"], false);
  EXPECT_EQ(rows[1]["layer"], 1);
  EXPECT_EQ(rows[1]["component"], "self_attn.k_proj");
  EXPECT_EQ(rows[1]["method"], "prune:0.5");
  EXPECT_EQ(rows[1]["never_diverged"].get<double>(), 0.5);
  EXPECT_EQ(rows[1]["saturated"], true);
  EXPECT_TRUE(rows[2]["layer"].is_null());
  EXPECT_TRUE(rows[2]["component"].is_null());
  EXPECT_TRUE(rows[2]["method"].is_null());
  // Without a histogram the share is unknown: null, not 0.
  v1::GetResultsResponse bare;
  v1::ConfigResult* r = bare.add_results();
  r->set_config("model.layers.0.mlp.up_proj=int8-absmax");
  r->mutable_metrics()->set_num_probes(2);
  EXPECT_TRUE(nlohmann::json::parse(FormatResultsJson(bare))["results"][0]["never_diverged"].is_null());
}

TEST(ResultsViewTest, TableMarksSaturatedConfigsButNotTheNoiseFloor) {
  // The config column is as wide as the pair's canonical string, 77 characters.
  auto line = [](std::string config, const std::string& rest) {
    config.resize(77, ' ');
    return config + rest + "\n";
  };
  EXPECT_EQ(FormatResultsTable(ProbeResults()),
            line("config", "  fdt75  fdt_mean  sdt_mean    dppl  probes  never_diverged") + std::string(77, '-') +
                "  -----  --------  --------  ------  ------  --------------\n" +
                line("(uncompressed)", "  4.00       4.00      0.00  0.0000       4          100.0%") +
                line("model.layers.0.mlp.up_proj=int8-absmax",
                     "  2.25       2.00      0.00  1.5000       4            0.0%") +
                line("model.layers.1.self_attn.k_proj=prune:0.5",
                     "  4.00!      2.25      0.00  2.5000       4           50.0%") +
                line("model.layers.0.mlp.up_proj=int8-absmax,model.layers.1.mlp.down_proj=prune:0.5",
                     "  1.25       0.75      0.00  4.2500       4            0.0%") +
                "! saturated: fdt75 is the completion length (more than a quarter of the probes never diverged) and "
                "cannot rank these configs; compare fdt_mean, or use a longer completion, more probes or a harsher "
                "method\n");
  // Without a saturated config there is neither mark nor footnote.
  v1::GetResultsResponse calm = ProbeResults();
  calm.mutable_results()->DeleteSubrange(1, 1);
  EXPECT_THAT(FormatResultsTable(calm), ::testing::Not(HasSubstr("!")));
}

TEST(ResultsViewTest, SortsEachMetricBetterFirstAndKeepsTheJobOrderOnTies) {
  // Values per config: fdt75, fdt_mean, sdt_mean, dppl, nll_mean, ppl, never_diverged (of 4 probes).
  struct Row {
    const char* config;
    double fdt75, fdt_mean, sdt_mean, dppl, nll_mean, ppl;
    uint32_t never;
  };
  const std::vector<Row> rows = {{"a=x", 2, 1.5, 3, 1.5, 0.4, 9, 0},
                                 {"b=x", 3, 1.5, 1, 1.25, 0.2, 7, 1},
                                 {"c=x", 1, 2.5, 2, 2.0, 0.7, 8, 2},
                                 {"d=x", 3, 0.5, 2, 1.75, 0.5, 6, 1}};
  v1::GetResultsResponse response;
  response.set_job_id("j-6");
  for (const Row& row : rows) {
    v1::ConfigResult* r = response.add_results();
    r->set_config(row.config);
    v1::Metrics& m = *r->mutable_metrics();
    m.set_fdt75(row.fdt75);
    m.set_fdt_mean(row.fdt_mean);
    m.set_sdt_mean(row.sdt_mean);
    m.set_dppl(row.dppl);
    m.set_nll_mean(row.nll_mean);
    m.set_ppl(row.ppl);
    m.set_num_probes(4);
    for (uint32_t count : {4 - row.never, row.never}) m.add_fdt_histogram(count);
  }
  const std::vector<std::pair<std::string, std::vector<std::string>>> want = {
      {"fdt75", {"b=x", "d=x", "a=x", "c=x"}},           // higher first; b before d: the job's order
      {"fdt_mean", {"c=x", "a=x", "b=x", "d=x"}},        // a and b tie at 1.5
      {"never_diverged", {"c=x", "b=x", "d=x", "a=x"}},  // b and d tie at 1 of 4
      {"sdt_mean", {"b=x", "c=x", "d=x", "a=x"}},        // lower first; c and d tie at 2
      {"dppl", {"b=x", "a=x", "d=x", "c=x"}},
      {"nll_mean", {"b=x", "a=x", "d=x", "c=x"}},
      {"ppl", {"d=x", "b=x", "c=x", "a=x"}},
  };
  for (const auto& [metric, order] : want) {
    v1::GetResultsResponse sorted = response;
    ASSERT_TRUE(SortResults(metric, 0, &sorted).ok()) << metric;
    EXPECT_EQ(Configs(sorted), order) << metric;
    sorted = response;
    ASSERT_TRUE(SortResults(metric, 2, &sorted).ok()) << metric;
    EXPECT_EQ(Configs(sorted), std::vector<std::string>(order.begin(), order.begin() + 2)) << metric;
  }
  // No metric: the job's order, cut to --top; a --top beyond the rows keeps them all.
  v1::GetResultsResponse cut = response;
  ASSERT_TRUE(SortResults("", 3, &cut).ok());
  EXPECT_EQ(Configs(cut), (std::vector<std::string>{"a=x", "b=x", "c=x"}));
  cut = response;
  ASSERT_TRUE(SortResults("dppl", 10, &cut).ok());
  EXPECT_EQ(cut.results_size(), 4);
}

TEST(ResultsViewTest, SortKeepsTheUncompressedModelOnTopAndRowsWithoutTheValueLast) {
  v1::GetResultsResponse response;
  response.set_job_id("j-3");
  auto add = [&](const std::string& config, double fdt75, uint32_t probes, uint32_t level) {
    v1::ConfigResult* r = response.add_results();
    r->set_config(config);
    r->mutable_metrics()->set_fdt75(fdt75);
    r->mutable_metrics()->set_dppl(fdt75);
    r->mutable_metrics()->set_num_probes(probes);
    r->set_search_level(level);
  };
  add("", 6, 4, 0);  // a search's level 0: the noise floor, whatever its fdt75
  add("a=x", 2, 4, 1);
  add("b=x", 0, 0, 1);  // no probes in yet: its zeros are no measurement
  add("c=x", 5, 4, 1);
  add("a=x,c=x", std::nan(""), 4, 2);
  v1::GetResultsResponse sorted = response;
  ASSERT_TRUE(SortResults("fdt75", 0, &sorted).ok());
  EXPECT_EQ(Configs(sorted), (std::vector<std::string>{"", "c=x", "a=x", "b=x", "a=x,c=x"}));
  sorted = response;
  ASSERT_TRUE(SortResults("dppl", 0, &sorted).ok());
  EXPECT_EQ(Configs(sorted), (std::vector<std::string>{"", "a=x", "c=x", "b=x", "a=x,c=x"}));
  // --top counts the configs, not the noise floor above them.
  sorted = response;
  ASSERT_TRUE(SortResults("fdt75", 1, &sorted).ok());
  EXPECT_EQ(Configs(sorted), (std::vector<std::string>{"", "c=x"}));
  // The table prints the sorted rows with their level; a node off the beam has no rank.
  sorted = response;
  ASSERT_TRUE(SortResults("fdt75", 0, &sorted).ok());
  sorted.mutable_results(1)->set_rank(0);
  const std::string table = FormatResultsTable(sorted);
  const size_t c = table.find("\nc=x "), a = table.find("\na=x ");
  ASSERT_NE(c, std::string::npos);
  ASSERT_NE(a, std::string::npos);
  EXPECT_LT(c, a);
  EXPECT_THAT(table.substr(c, table.find('\n', c + 1) - c), ::testing::EndsWith("      1     0"));
  EXPECT_THAT(table.substr(a, table.find('\n', a + 1) - a), ::testing::EndsWith("-      1"));
}

TEST(ResultsViewTest, RefusesAnUnknownMetricANegativeTopAndPplWithoutPpl) {
  v1::GetResultsResponse response = ProbeResults();
  const Status unknown = SortResults("fdt90", 0, &response);
  EXPECT_EQ(unknown.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(unknown.message(), HasSubstr("'fdt90'"));
  EXPECT_THAT(unknown.message(), HasSubstr(kSortMetricsHelp));
  EXPECT_EQ(CheckSortMetric("fdt90").code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(CheckSortMetric("never_diverged").ok());
  EXPECT_EQ(SortResults("dppl", -1, &response).code(), StatusCode::kInvalidArgument);
  const Status ppl = SortResults("ppl", 0, &response);
  EXPECT_EQ(ppl.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(ppl.message(), HasSubstr("job j-5 has no ppl"));
  EXPECT_EQ(Configs(response), Configs(ProbeResults()));  // untouched by the refusals
}

TEST(ResultsViewTest, EveryFormatPrintsTheSortedOrder) {
  v1::GetResultsResponse response = ProbeResults();
  ASSERT_TRUE(SortResults("dppl", 2, &response).ok());
  const std::vector<std::string> want = {"model.layers.0.mlp.up_proj=int8-absmax",
                                         "model.layers.1.self_attn.k_proj=prune:0.5"};
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(response));
  ASSERT_EQ(doc["results"].size(), 2u);
  EXPECT_EQ(doc["results"][0]["config"], want[0]);
  EXPECT_EQ(doc["results"][1]["config"], want[1]);
  response = ProbeResults();
  ASSERT_TRUE(SortResults("fdt75", 0, &response).ok());
  const std::string csv = FormatResultsCsv(response);
  // The noise floor first, then fdt75 4, 2.25, 1.25.
  const size_t floor = csv.find("\n,4,"), k = csv.find("\nmodel.layers.1.self_attn.k_proj"),
               up = csv.find("\nmodel.layers.0.mlp.up_proj=int8-absmax,2.25"), pair = csv.find("\n\"model");
  ASSERT_NE(pair, std::string::npos);
  EXPECT_LT(floor, k);
  EXPECT_LT(k, up);
  EXPECT_LT(up, pair);
  const std::string table = FormatResultsTable(response);
  EXPECT_LT(table.find("(uncompressed)"), table.find("self_attn.k_proj"));
  EXPECT_LT(table.find("self_attn.k_proj"), table.find("up_proj=int8-absmax  "));
}

}  // namespace
}  // namespace dtm::cli
