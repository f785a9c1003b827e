// What `dtmctl results`, `dtmctl jobs` and `dtmctl watch` print, from hand-built messages.
#include "cli/results_format.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli/progress_bar.h"

namespace dtm::cli {
namespace {

constexpr char kTwoComponents[] =
    "model.layers.0.mlp.up_proj=int8-absmax,model.layers.1.mlp.down_proj=prune:0.5";

void SetMetrics(v1::Metrics* m, double fdt75, double fdt_mean, double sdt_mean, double dppl, double nll_mean,
                uint32_t num_probes, std::vector<uint32_t> histogram) {
  m->set_fdt75(fdt75);
  m->set_fdt_mean(fdt_mean);
  m->set_sdt_mean(sdt_mean);
  m->set_dppl(dppl);
  m->set_nll_mean(nll_mean);
  m->set_num_probes(num_probes);
  for (uint32_t count : histogram) m->add_fdt_histogram(count);
}

// A job of two configs over four probes with completion length 4 (five histogram bins): one
// complete config whose canonical string holds a comma, one still running.
v1::GetResultsResponse TwoConfigResults() {
  v1::GetResultsResponse response;
  response.set_job_id("j-42");
  response.set_state(v1::JOB_STATE_RUNNING);
  SetMetrics(response.mutable_noise_floor(), 4, 3.75, 0.25, 1.0001, 0.0001, 4, {0, 0, 0, 1, 3});
  v1::ConfigResult* a = response.add_results();
  a->set_config(kTwoComponents);
  SetMetrics(a->mutable_metrics(), 3.25, 2.5, 1.75, 1.2345678, 0.1, 4, {0, 1, 1, 1, 1});
  a->set_complete(true);
  v1::ConfigResult* b = response.add_results();
  b->set_config("model.layers.3.self_attn.q_proj=int4");
  SetMetrics(b->mutable_metrics(), 1.5, 1.0 / 3.0, 3, 12.5, 2.5257, 3, {1, 1, 1, 0, 0});
  b->set_complete(false);
  return response;
}

TEST(ResultsFormatTest, TableAlignsColumnsWithTheNoiseFloorFirst) {
  // The '*' marks the running config; complete rows keep its column blank so the counts line up.
  const std::string config_pad(77 - 6, ' ');
  EXPECT_EQ(FormatResultsTable(TwoConfigResults()),
            "config" + config_pad + "  fdt75  fdt_mean  sdt_mean     dppl  probes  never_diverged\n" +
                std::string(77, '-') + "  -----  --------  --------  -------  ------  --------------\n" +
                "(uncompressed)" + std::string(77 - 14, ' ') + "   4.00      3.75      0.25   1.0001      4" +
                std::string(12, ' ') + "75.0%\n" + kTwoComponents + "   3.25      2.50      1.75   1.2346      4" +
                std::string(12, ' ') + "25.0%\n" + "model.layers.3.self_attn.q_proj=int4" + std::string(77 - 36, ' ') +
                "   1.50      0.33      3.00  12.5000      3*" + std::string(12, ' ') + "0.0%\n" +
                "* incomplete: shards outstanding, metrics cover the probes so far\n");
}

// Issue 13: a config with no probe in yet prints no metrics, since 0.00 reads as total divergence.
TEST(ResultsFormatTest, TablePrintsNoMetricsForAConfigWithoutProbesYet) {
  v1::GetResultsResponse response;
  response.set_state(v1::JOB_STATE_RUNNING);
  v1::ConfigResult* waiting = response.add_results();
  waiting->set_config("c=int8-absmax");
  waiting->mutable_metrics()->set_num_probes(0);
  waiting->set_complete(false);
  EXPECT_EQ(FormatResultsTable(response),
            "config         fdt75  fdt_mean  sdt_mean  dppl  probes  never_diverged\n"
            "-------------  -----  --------  --------  ----  ------  --------------\n"
            "c=int8-absmax      -         -         -     -      0*               -\n"
            "* incomplete: shards outstanding, metrics cover the probes so far\n");
}

// `reference:`: the noise floor is the reference's and config "" the job's model; both are shown,
// told apart in every format.
TEST(ResultsFormatTest, AJobAgainstAReferenceShowsBothUncompressedRowsLabelled) {
  v1::GetResultsResponse response = TwoConfigResults();
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  response.mutable_results()->DeleteSubrange(1, 1);
  response.set_reference_model_fingerprint(std::string(64, 'a'));
  v1::ConfigResult* own = response.add_results();
  SetMetrics(own->mutable_metrics(), 3.5, 3, 0.5, 1.01, 0.01, 4, {0, 0, 1, 1, 2});
  own->set_complete(true);
  std::rotate(response.mutable_results()->rbegin(), response.mutable_results()->rbegin() + 1,
              response.mutable_results()->rend());
  const std::string table = FormatResultsTable(response);
  EXPECT_THAT(table, ::testing::ContainsRegex("\n\\(reference\\) +4.00 +3.75 .*\n\\(uncompressed\\) +3.50 +3.00 "));
  EXPECT_THAT(table, ::testing::HasSubstr("baseline: the greedy completions of the reference aaaaaaaaaaaa; "
                                          "(reference) is it against itself"));
  const std::string csv = FormatResultsCsv(response);
  EXPECT_THAT(csv, ::testing::HasSubstr("\n(reference),4,3.75,"));
  EXPECT_THAT(csv, ::testing::HasSubstr("\n,3.5,3,"));
  const nlohmann::json json = nlohmann::json::parse(FormatResultsJson(response));
  EXPECT_EQ(json["reference_model_fingerprint"], std::string(64, 'a'));
  EXPECT_EQ(json["noise_floor"]["fdt75"], 4);
  EXPECT_EQ(json["results"][0]["config"], "");
  // Without a reference, the uncompressed row stands for the noise floor and is printed once.
  response.clear_reference_model_fingerprint();
  EXPECT_THAT(FormatResultsTable(response), ::testing::Not(::testing::HasSubstr("(reference)")));
  EXPECT_FALSE(nlohmann::json::parse(FormatResultsJson(response)).contains("reference_model_fingerprint"));
}

TEST(ResultsFormatTest, TableShowsLevelAndRankOfSearchResultsAndNoDuplicateUncompressedRow) {
  v1::GetResultsResponse response;
  response.set_job_id("j-7");
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  SetMetrics(response.mutable_noise_floor(), 4, 4, 0, 1, 0, 2, {});
  v1::ConfigResult* base = response.add_results();  // the uncompressed model evaluated as a config
  SetMetrics(base->mutable_metrics(), 4, 4, 0, 1, 0, 2, {});
  base->set_complete(true);
  v1::ConfigResult* r = response.add_results();
  r->set_config("a=int8");
  SetMetrics(r->mutable_metrics(), 2, 2, 1, 1.5, 0.4, 2, {});
  r->set_complete(true);
  r->set_search_level(1);
  r->set_rank(0);
  EXPECT_EQ(FormatResultsTable(response),
            "config          fdt75  fdt_mean  sdt_mean    dppl  probes  never_diverged  level  rank\n"
            "--------------  -----  --------  --------  ------  ------  --------------  -----  ----\n"
            "(uncompressed)   4.00      4.00      0.00  1.0000       2               -\n"
            "a=int8           2.00      2.00      1.00  1.5000       2               -      1     0\n");
  // The CSV keeps a node's level and rank too (issue 13: they used to be dropped).
  EXPECT_EQ(FormatResultsCsv(response),
            "config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,ppl,search_level,rank,"
            "never_diverged,layer,component,method\n"
            ",4,4,0,1,0,2,true,0,,,,,,,\n"
            "a=int8,2,2,1,1.5,0.4,2,true,0,,1,0,,,,\n");
}

TEST(ResultsFormatTest, SearchLevelStatisticsFollowTheTableAndAreInTheJson) {
  v1::GetResultsResponse response;
  response.set_job_id("j-8");
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  v1::ConfigResult* r = response.add_results();
  r->set_config("a=int8");
  SetMetrics(r->mutable_metrics(), 2, 2, 1, 1.5, 0.4, 2, {});
  r->set_complete(true);
  r->set_search_level(1);
  r->set_rank(0);
  v1::SearchLevel* level = response.add_search_levels();
  level->set_level(1);
  level->set_nodes(28);
  level->set_nodes_cached(7);
  response.set_rank_by("dppl");
  const std::string table = FormatResultsTable(response);
  EXPECT_THAT(table, ::testing::EndsWith("levels ranked by dppl\nlevel 1: 28 nodes evaluated, 7 from the cache\n"));
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(response));
  EXPECT_EQ(doc["rank_by"], "dppl");
  EXPECT_EQ(doc["search_levels"], nlohmann::json::parse(R"([{"level": 1, "nodes": 28, "nodes_cached": 7}])"));
}

TEST(ResultsFormatTest, ARaceSaysWhatItDroppedAndSpentInTableAndJson) {
  v1::GetResultsResponse response;
  response.set_job_id("j-9");
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  v1::ConfigResult* kept = response.add_results();
  kept->set_config("a=int8");
  SetMetrics(kept->mutable_metrics(), 2, 2, 1, 1.5, 0.4, 64, {});
  kept->set_complete(true);
  kept->set_search_level(1);
  kept->set_rank(0);
  v1::ConfigResult* dropped = response.add_results();
  dropped->set_config("b=int8");
  SetMetrics(dropped->mutable_metrics(), 1, 1, 1, 1.5, 0.4, 16, {});
  dropped->set_search_level(1);
  dropped->set_dropped_by_racing(true);
  v1::SearchLevel* level = response.add_search_levels();
  level->set_level(1);
  level->set_nodes(2);
  level->set_nodes_dropped(1);
  level->set_probe_evaluations(80);
  v1::RacingDrop* drop = level->add_drops();
  drop->set_probes(16);
  drop->set_nodes(1);
  v1::RacingSummary* racing = response.mutable_racing();
  racing->set_probe_evaluations(80);
  racing->set_exact_probe_evaluations(128);
  racing->set_nodes_dropped(1);
  *racing->add_drops() = *drop;
  racing->set_first_probes(16);
  racing->set_step_probes(8);
  racing->set_confidence(0.95);
  racing->set_epsilon(1.5);
  const std::string table = FormatResultsTable(response);
  EXPECT_THAT(table, ::testing::HasSubstr("     16x"));  // the dropped row's probes, marked
  EXPECT_THAT(table, ::testing::HasSubstr("x dropped by racing: metrics cover the first probes only\n"));
  EXPECT_THAT(table, ::testing::HasSubstr(
                         "level 1: 2 nodes evaluated, 0 from the cache, 1 dropped by racing (1 after 16 probes), 80 "
                         "probe evaluations\n"));
  EXPECT_THAT(table, ::testing::EndsWith(
                         "racing: 80 of 128 probe evaluations (62.5%) of an evaluation of the same configs on every "
                         "probe; 1 configs dropped (1 after 16 probes); first 16 probes, 8 more per round, bounds at "
                         "confidence 0.95, epsilon 1.5\n"));
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(response));
  EXPECT_EQ(doc["racing"], nlohmann::json::parse(R"({"probe_evaluations": 80, "exact_probe_evaluations": 128,
      "nodes_dropped": 1, "drops": [{"probes": 16, "nodes": 1}], "first_probes": 16, "step_probes": 8,
      "confidence": 0.95, "epsilon": 1.5})"));
  EXPECT_EQ(doc["search_levels"][0]["drops"], nlohmann::json::parse(R"([{"probes": 16, "nodes": 1}])"));
  EXPECT_EQ(doc["results"][1]["dropped_by_racing"], true);
  EXPECT_FALSE(doc["results"][0].contains("dropped_by_racing"));
}

TEST(ResultsFormatTest, CsvQuotesConfigsWithCommasAndKeepsFullPrecision) {
  EXPECT_EQ(FormatResultsCsv(TwoConfigResults()),
            "config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,ppl,search_level,rank,"
            "never_diverged,layer,component,method\n"
            ",4,3.75,0.25,1.0001,0.0001,4,true,0,,,,0.75,,,\n"
            "\"model.layers.0.mlp.up_proj=int8-absmax,model.layers.1.mlp.down_proj=prune:0.5\","
            "3.25,2.5,1.75,1.2345678,0.1,4,true,0,,,,0.25,,,\n"
            "model.layers.3.self_attn.q_proj=int4,1.5,0.3333333333333333,3,12.5,2.5257,3,false,0,,,,0,3,self_attn.q_proj,"
            "int4\n");
}

TEST(ResultsFormatTest, CsvAndJsonCarryTheOutlierColumns) {
  v1::GetResultsResponse response;
  response.set_job_id("j-9");
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  v1::ConfigResult* r = response.add_results();
  r->set_config("a=llm-int8");
  SetMetrics(r->mutable_metrics(), 2, 2, 1, 1.5, 0.4, 2, {});
  r->mutable_metrics()->set_outlier_columns_mean(12.5);
  r->set_complete(true);
  v1::ProbeResult* p = r->add_probe_results();
  p->set_probe_id("p0");
  p->set_outlier_columns(13);
  EXPECT_EQ(FormatResultsCsv(response),
            "config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,ppl,search_level,rank,"
            "never_diverged,layer,component,method\n"
            "a=llm-int8,2,2,1,1.5,0.4,2,true,12.5,,,,,,,\n");
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(response));
  EXPECT_EQ(doc["results"][0]["outlier_columns_mean"].get<double>(), 12.5);
  EXPECT_EQ(doc["results"][0]["probe_results"][0]["outlier_columns"].get<uint32_t>(), 13u);
}

TEST(ResultsFormatTest, AJobWithPplShowsItsColumnInTableCsvAndJson) {
  v1::GetResultsResponse response;
  response.set_job_id("j-8");
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  SetMetrics(response.mutable_noise_floor(), 2, 2, 0, 1.5, 0.4, 2, {});
  response.mutable_noise_floor()->set_ppl(388.93125);
  v1::ConfigResult* r = response.add_results();
  r->set_config("a=int8");
  SetMetrics(r->mutable_metrics(), 1, 1.5, 1, 1.75, 0.5, 2, {});
  r->mutable_metrics()->set_ppl(390.8171);
  r->set_complete(true);
  const std::string table = FormatResultsTable(response);
  EXPECT_EQ(table,
            "config          fdt75  fdt_mean  sdt_mean    dppl       ppl  probes  never_diverged\n"
            "--------------  -----  --------  --------  ------  --------  ------  --------------\n"
            "(uncompressed)   2.00      2.00      0.00  1.5000  388.9312       2               -\n"
            "a=int8           1.00      1.50      1.00  1.7500  390.8171       2               -\n");
  EXPECT_EQ(FormatResultsCsv(response),
            "config,fdt75,fdt_mean,sdt_mean,dppl,nll_mean,num_probes,complete,outlier_columns_mean,ppl,search_level,rank,"
            "never_diverged,layer,component,method\n"
            ",2,2,0,1.5,0.4,2,true,0,388.93125,,,,,,\n"
            "a=int8,1,1.5,1,1.75,0.5,2,true,0,390.8171,,,,,,\n");
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(response));
  EXPECT_EQ(doc["noise_floor"]["ppl"].get<double>(), 388.93125);
  EXPECT_EQ(doc["results"][0]["ppl"].get<double>(), 390.8171);
  // Without `ppl:` no row has one, and the table has no such column.
  EXPECT_THAT(FormatResultsTable(TwoConfigResults()), ::testing::Not(::testing::HasSubstr(" ppl")));
}

TEST(ResultsFormatTest, CsvFieldDoublesQuotesAndQuotesLineBreaks) {
  EXPECT_EQ(CsvField("plain"), "plain");
  EXPECT_EQ(CsvField(""), "");
  EXPECT_EQ(CsvField("a,b"), "\"a,b\"");
  EXPECT_EQ(CsvField("say \"hi\""), "\"say \"\"hi\"\"\"");
  EXPECT_EQ(CsvField("two\nlines"), "\"two\nlines\"");
}

TEST(ResultsFormatTest, JsonIsTheExpectedDocument) {
  v1::GetResultsResponse response;
  response.set_job_id("j-1");
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  SetMetrics(response.mutable_noise_floor(), 2, 2, 0, 1, 0, 1, {0, 0, 1});
  v1::ConfigResult* r = response.add_results();
  r->set_config("a=int8,b=int4");
  SetMetrics(r->mutable_metrics(), 1, 1, 1, 1.5, 0.25, 1, {0, 1, 0});
  r->mutable_metrics()->set_ppl(7.5);
  r->set_complete(true);
  r->set_search_level(0);
  r->set_rank(2);
  v1::ProbeResult* p = r->add_probe_results();
  p->set_probe_id("p0");
  p->set_probe_index(0);
  p->set_fdt(1);
  p->set_sdt(1);
  p->set_nll(0.25);
  EXPECT_EQ(FormatResultsJson(response), R"({
  "job_id": "j-1",
  "noise_floor": {
    "dppl": 1.0,
    "fdt75": 2.0,
    "fdt_histogram": [
      0,
      0,
      1
    ],
    "fdt_mean": 2.0,
    "never_diverged": 1.0,
    "nll_mean": 0.0,
    "num_probes": 1,
    "outlier_columns_mean": 0.0,
    "sdt_mean": 0.0
  },
  "results": [
    {
      "complete": true,
      "component": null,
      "config": "a=int8,b=int4",
      "dppl": 1.5,
      "fdt75": 1.0,
      "fdt_histogram": [
        0,
        1,
        0
      ],
      "fdt_mean": 1.0,
      "layer": null,
      "method": null,
      "never_diverged": 0.0,
      "nll_mean": 0.25,
      "num_probes": 1,
      "outlier_columns_mean": 0.0,
      "ppl": 7.5,
      "probe_results": [
        {
          "fdt": 1,
          "nll": 0.25,
          "outlier_columns": 0,
          "probe_id": "p0",
          "probe_index": 0,
          "sdt": 1
        }
      ],
      "rank": 2,
      "saturated": false,
      "sdt_mean": 1.0,
      "search_level": 0
    }
  ],
  "state": "SUCCEEDED"
}
)");
}

TEST(ResultsFormatTest, JsonRoundTripsEveryNumberExactly) {
  const v1::GetResultsResponse response = TwoConfigResults();
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(response));
  EXPECT_EQ(doc["job_id"], "j-42");
  EXPECT_EQ(doc["state"], "RUNNING");
  EXPECT_EQ(doc["noise_floor"]["dppl"].get<double>(), 1.0001);
  EXPECT_EQ(doc["noise_floor"]["fdt_histogram"], nlohmann::json({0, 0, 0, 1, 3}));
  ASSERT_EQ(doc["results"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const nlohmann::json& row = doc["results"][i];
    const v1::ConfigResult& want = response.results(i);
    EXPECT_EQ(row["config"], want.config());
    EXPECT_EQ(row["complete"], want.complete());
    EXPECT_EQ(row["fdt75"].get<double>(), want.metrics().fdt75());
    EXPECT_EQ(row["fdt_mean"].get<double>(), want.metrics().fdt_mean());  // 1/3 included: bit-exact
    EXPECT_EQ(row["sdt_mean"].get<double>(), want.metrics().sdt_mean());
    EXPECT_EQ(row["dppl"].get<double>(), want.metrics().dppl());
    EXPECT_EQ(row["nll_mean"].get<double>(), want.metrics().nll_mean());
    EXPECT_EQ(row["num_probes"].get<uint32_t>(), want.metrics().num_probes());
    EXPECT_TRUE(row["fdt75"].is_number());
    EXPECT_FALSE(row.contains("search_level"));
    EXPECT_FALSE(row.contains("rank"));
    EXPECT_FALSE(row.contains("probe_results"));
    EXPECT_FALSE(row.contains("ppl"));
  }
}

TEST(ResultsFormatTest, ShortestDoubleParsesBackToTheSameValue) {
  EXPECT_EQ(ShortestDouble(0.1), "0.1");
  EXPECT_EQ(ShortestDouble(37.25), "37.25");
  EXPECT_EQ(ShortestDouble(3), "3");
  EXPECT_EQ(ShortestDouble(0.0001), "0.0001");
  EXPECT_EQ(ShortestDouble(1e-30), "1e-30");
  EXPECT_EQ(std::stod(ShortestDouble(1.0 / 3.0)), 1.0 / 3.0);
}

TEST(ResultsFormatTest, ParsesFormatAndStateNamesAndRejectsOthers) {
  EXPECT_EQ(*ParseResultsFormat("csv"), ResultsFormat::kCsv);
  EXPECT_EQ(ParseResultsFormat("xml").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseJobState("cancelled"), v1::JOB_STATE_CANCELLED);
  const Status bad = ParseJobState("done").status();
  EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("'done'"), std::string::npos) << bad.message();
}

TEST(ResultsFormatTest, JobsTableListsIdStateKindNameProgressCreationTimeAndWhy) {
  std::vector<v1::Job> jobs(3);
  jobs[0].set_job_id("j-2");
  jobs[0].set_state(v1::JOB_STATE_RUNNING);
  jobs[0].mutable_summary()->set_kind(v1::JOB_KIND_QUANT_SEARCH);
  jobs[0].mutable_summary()->set_name("llama int8 tree");
  jobs[0].mutable_progress()->set_tasks_done(120);
  jobs[0].mutable_progress()->set_tasks_total(480);
  jobs[0].mutable_create_time()->set_seconds(1714566896);  // 2024-05-01T12:34:56Z
  jobs[1].set_job_id("j-1");
  jobs[1].set_state(v1::JOB_STATE_SUCCEEDED);
  jobs[1].mutable_summary()->set_kind(static_cast<v1::JobKind>(9));  // a kind newer than this client
  jobs[1].mutable_progress()->set_tasks_done(8);
  jobs[1].mutable_progress()->set_tasks_total(8);
  jobs[0].mutable_progress()->set_message("evaluating 12 configs");
  // A waiting job says what it waits for; a failed one why it failed (its progress message is stale).
  jobs[2].set_job_id("j-0");
  jobs[2].set_state(v1::JOB_STATE_FAILED);
  jobs[2].mutable_summary()->set_kind(v1::JOB_KIND_PROBE);
  jobs[2].mutable_progress()->set_message("evaluating 3 configs");
  jobs[2].mutable_error()->set_message("task t-1 failed on w1:\nout of memory");
  EXPECT_EQ(FormatJobsTable(jobs),
            "id   state      kind          name             done/total  created               why\n"
            "---  ---------  ------------  ---------------  ----------  --------------------  "
            "------------------------------------\n"
            "j-2  RUNNING    quant-search  llama int8 tree     120/480  2024-05-01T12:34:56Z  evaluating 12 configs\n"
            "j-1  SUCCEEDED  9             -                       8/8  -                     -\n"
            "j-0  FAILED     probe         -                       0/0  -                     "
            "task t-1 failed on w1: out of memory\n");
}

// -- sparsify-round: the probes in `results`, the answer in `allocation`

void AddComponent(v1::SparsityAllocation* allocation, const std::string& name, uint64_t params,
                  double current, double extra, double predicted_fdt75) {
  v1::ComponentSparsity* c = allocation->add_components();
  c->set_component(name);
  c->set_params(params);
  c->set_current(current);
  c->set_extra(extra);
  c->set_target(current + extra);
  c->set_predicted_fdt75(predicted_fdt75);
}

// One probe config and a three-component allocation. The first component's extra is 0.1 + 0.2
// (0.30000000000000004), which only a shortest-round-trip printer keeps exact.
v1::GetResultsResponse SparsifyRoundResults() {
  v1::GetResultsResponse response;
  response.set_job_id("j-9");
  response.set_state(v1::JOB_STATE_SUCCEEDED);
  v1::ConfigResult* probe = response.add_results();
  probe->set_config("model.layers.0.mlp.up_proj=prune:0.05");
  SetMetrics(probe->mutable_metrics(), 60, 58.5, 1.25, 1.0123, 0.02, 8, {});
  probe->set_complete(true);
  v1::SparsityAllocation* a = response.mutable_allocation();
  a->set_method("balanced");
  a->set_step(0.1);
  a->set_achieved_step(0.10000123);
  a->set_min_fdt75(41.3);
  a->set_completion_len(64);
  a->set_model_fingerprint("sha256:abc123");
  a->set_num_layers(2);
  AddComponent(a, "model.layers.0.mlp.up_proj", 11008 * 4096, 0.1, 0.1 + 0.2, 41.3);
  AddComponent(a, "model.layers.0.self_attn.q_proj", 4096 * 4096, 0, 0.0537, 47.126);
  AddComponent(a, "model.layers.1.mlp.down_proj", 11008 * 4096, 0.25, 0, 64);
  return response;
}

TEST(ResultsFormatTest, TableFollowsTheProbesWithTheAllocationAndItsSummary) {
  EXPECT_EQ(FormatResultsTable(SparsifyRoundResults()),
            "config                                 fdt75  fdt_mean  sdt_mean    dppl  probes  never_diverged\n"
            "-------------------------------------  -----  --------  --------  ------  ------  --------------\n"
            "model.layers.0.mlp.up_proj=prune:0.05  60.00     58.50      1.25  1.0123       8               -\n"
            "\n"
            "component                          params  current   extra  target  predicted_fdt75\n"
            "-------------------------------  --------  -------  ------  ------  ---------------\n"
            "model.layers.0.mlp.up_proj       45088768   10.00%  30.00%  40.00%            41.30\n"
            "model.layers.0.self_attn.q_proj  16777216    0.00%   5.37%   5.37%            47.13\n"
            "model.layers.1.mlp.down_proj     45088768   25.00%   0.00%  25.00%            64.00\n"
            "balanced allocation: step 10% (achieved 10.0001%), min predicted fdt75 41.30 of 64\n");
}

TEST(ResultsFormatTest, TableHasNoAllocationSectionWithoutAnAllocation) {
  v1::GetResultsResponse response = SparsifyRoundResults();
  response.clear_allocation();
  const std::string table = FormatResultsTable(response);
  EXPECT_EQ(table.find("\n\n"), std::string::npos) << table;
  EXPECT_EQ(table.find("allocation"), std::string::npos) << table;
}

TEST(ResultsFormatTest, JsonCarriesTheAllocationWithExactNumbers) {
  const v1::GetResultsResponse response = SparsifyRoundResults();
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(response));
  ASSERT_EQ(doc["results"].size(), 1u);
  EXPECT_EQ(doc["results"][0]["config"], "model.layers.0.mlp.up_proj=prune:0.05");
  ASSERT_TRUE(doc.contains("allocation"));
  const nlohmann::json& a = doc["allocation"];
  // Exactly these keys: a later round reads them back from its `previous:` file.
  std::vector<std::string> keys;
  for (auto it = a.begin(); it != a.end(); ++it) keys.push_back(it.key());
  EXPECT_THAT(
      keys, ::testing::UnorderedElementsAre("method", "step", "achieved_step", "min_fdt75", "completion_len",
                                            "model_fingerprint", "num_layers", "components"));
  EXPECT_EQ(a["method"], "balanced");
  EXPECT_TRUE(a["step"].is_number_float());
  EXPECT_EQ(a["step"].get<double>(), 0.1);
  EXPECT_EQ(a["achieved_step"].get<double>(), 0.10000123);
  EXPECT_EQ(a["min_fdt75"].get<double>(), 41.3);
  EXPECT_TRUE(a["completion_len"].is_number_unsigned());
  EXPECT_EQ(a["completion_len"].get<uint32_t>(), 64u);
  EXPECT_EQ(a["model_fingerprint"], "sha256:abc123");
  EXPECT_EQ(a["num_layers"].get<uint32_t>(), 2u);
  const v1::SparsityAllocation& want = response.allocation();
  ASSERT_EQ(a["components"].size(), static_cast<size_t>(want.components_size()));
  for (int i = 0; i < want.components_size(); ++i) {
    const nlohmann::json& c = a["components"][i];
    const v1::ComponentSparsity& w = want.components(i);
    keys.clear();
    for (auto it = c.begin(); it != c.end(); ++it) keys.push_back(it.key());
    EXPECT_THAT(keys, ::testing::UnorderedElementsAre("component", "params", "current", "extra", "target",
                                                      "predicted_fdt75"));
    EXPECT_EQ(c["component"], w.component());
    EXPECT_TRUE(c["params"].is_number_integer());
    EXPECT_EQ(c["params"].get<uint64_t>(), w.params());
    EXPECT_EQ(c["current"].get<double>(), w.current());
    EXPECT_EQ(c["extra"].get<double>(), w.extra());
    EXPECT_EQ(c["target"].get<double>(), w.target());
    EXPECT_EQ(c["predicted_fdt75"].get<double>(), w.predicted_fdt75());
  }
  // Bit-exact, not merely close: 0.1 + 0.2 is not 0.3.
  EXPECT_EQ(a["components"][0]["extra"].get<double>(), 0.1 + 0.2);
  EXPECT_NE(a["components"][0]["extra"].get<double>(), 0.3);
}

TEST(ResultsFormatTest, JsonHasNoAllocationKeyWithoutAnAllocation) {
  v1::GetResultsResponse response = SparsifyRoundResults();
  response.clear_allocation();
  EXPECT_FALSE(nlohmann::json::parse(FormatResultsJson(response)).contains("allocation"));
  EXPECT_FALSE(nlohmann::json::parse(FormatResultsJson(TwoConfigResults())).contains("allocation"));
}

TEST(ResultsFormatTest, CsvPrintsTheAllocationInsteadOfTheProbes) {
  EXPECT_EQ(FormatResultsCsv(SparsifyRoundResults()),
            "component,params,current,extra,target,predicted_fdt75\n"
            "model.layers.0.mlp.up_proj,45088768,0.1,0.30000000000000004,0.4,41.3\n"
            "model.layers.0.self_attn.q_proj,16777216,0,0.0537,0.0537,47.126\n"
            "model.layers.1.mlp.down_proj,45088768,0.25,0,0.25,64\n");
}

// -- progress

v1::JobProgress Progress(v1::JobState state, uint32_t done, uint32_t total) {
  v1::JobProgress p;
  p.set_job_id("j-1");
  p.set_state(state);
  p.set_tasks_done(done);
  p.set_tasks_total(total);
  return p;
}

TEST(ProgressBarTest, FormatsDurationsInSecondsMinutesAndHours) {
  EXPECT_EQ(FormatDuration(0), "0s");
  EXPECT_EQ(FormatDuration(59.4), "59s");
  EXPECT_EQ(FormatDuration(59.6), "1m00s");
  EXPECT_EQ(FormatDuration(65), "1m05s");
  EXPECT_EQ(FormatDuration(3599), "59m59s");
  EXPECT_EQ(FormatDuration(3600), "1h00m");
  EXPECT_EQ(FormatDuration(7384), "2h03m");
  EXPECT_EQ(FormatDuration(100 * 3600 + 60), "100h01m");
  EXPECT_EQ(FormatDuration(-1), "?");
  EXPECT_EQ(FormatDuration(std::numeric_limits<double>::quiet_NaN()), "?");
}

TEST(ProgressBarTest, RendersAnEmptyBarForAJobWithNoTasksYet) {
  EXPECT_EQ(RenderProgress(Progress(v1::JOB_STATE_PENDING, 0, 0), 10), "[..........] 0/0 tasks  PENDING");
}

TEST(ProgressBarTest, RendersCountsRateEtaAndState) {
  v1::JobProgress p = Progress(v1::JOB_STATE_RUNNING, 240, 480);
  p.set_tasks_cached(35);
  p.set_probes_per_second(12.34);
  p.set_eta_seconds(65);
  EXPECT_EQ(RenderProgress(p, 10),
            "[#####.....] 240/480 tasks  (35 cached)  12.3 probes/s  ETA 1m05s  RUNNING");
  p.set_tasks_done(120);
  p.set_tasks_failed(2);
  p.set_eta_seconds(2 * 3600 + 5 * 60);
  EXPECT_EQ(RenderProgress(p, 8),
            "[##......] 120/480 tasks  (35 cached, 2 failed)  12.3 probes/s  ETA 2h05m  RUNNING");
}

TEST(ProgressBarTest, RendersSearchLevelBestFdtAndMessage) {
  v1::JobProgress p = Progress(v1::JOB_STATE_RUNNING, 3, 4);
  p.set_search_level(2);
  p.set_best_fdt75(41.5);
  p.set_message("waiting for a worker serving /models/tiny");
  EXPECT_EQ(
      RenderProgress(p, 4),
      "[###.] 3/4 tasks  RUNNING  level 2  best fdt75 41.50  waiting for a worker serving /models/tiny");
}

TEST(ProgressBarTest, MarksABestFdt75AtTheCompletionLengthAsSaturated) {
  v1::JobProgress p = Progress(v1::JOB_STATE_RUNNING, 3, 4);
  p.set_search_level(2);
  p.set_best_fdt75(64);
  EXPECT_EQ(RenderProgress(p, 4, 64), "[###.] 3/4 tasks  RUNNING  level 2  best fdt75 64.00 (saturated)");
  EXPECT_EQ(RenderProgress(p, 4, 96), "[###.] 3/4 tasks  RUNNING  level 2  best fdt75 64.00");
  EXPECT_EQ(RenderProgress(p, 4), "[###.] 3/4 tasks  RUNNING  level 2  best fdt75 64.00");  // length unknown
}

TEST(ProgressBarTest, DropsTheEtaOnceTheJobHasEnded) {
  v1::JobProgress p = Progress(v1::JOB_STATE_SUCCEEDED, 4, 4);
  p.set_eta_seconds(0);
  EXPECT_EQ(RenderProgress(p, 4), "[####] 4/4 tasks  SUCCEEDED");
}

TEST(ProgressBarTest, LogFilterPrintsOnStateChangesAndEachTenthOfTheTasks) {
  ProgressLogFilter filter;
  EXPECT_TRUE(filter.ShouldPrint(Progress(v1::JOB_STATE_PENDING, 0, 100)));
  EXPECT_FALSE(filter.ShouldPrint(Progress(v1::JOB_STATE_PENDING, 0, 100)));
  EXPECT_TRUE(filter.ShouldPrint(Progress(v1::JOB_STATE_RUNNING, 0, 100)));
  int printed = 0;
  for (uint32_t done = 1; done < 100; ++done)
    printed += filter.ShouldPrint(Progress(v1::JOB_STATE_RUNNING, done, 100));
  EXPECT_EQ(printed, 9);  // at 10, 20, ..., 90
  v1::JobProgress with_message = Progress(v1::JOB_STATE_RUNNING, 99, 100);
  with_message.set_message("worker lost");
  EXPECT_TRUE(filter.ShouldPrint(with_message));
  with_message.set_tasks_done(100);
  EXPECT_TRUE(filter.ShouldPrint(with_message));  // the last tenth
  with_message.set_state(v1::JOB_STATE_SUCCEEDED);
  EXPECT_TRUE(filter.ShouldPrint(with_message));
}

// A sparsify run's answer: a line per round with the allocated and measured sparsity, the final
// model's zeros against its targets (by hand: 150 + 299 of 1000 + 1000 weights, the worst 1 weight
// off), the same rounds in JSON and CSV, and the progress line of a round that trains.
TEST(SparsifyRunResultsTest, ShowsEachRoundAndTheFinalModelsSparsity) {
  using ::testing::HasSubstr;
  v1::GetResultsResponse response;
  response.set_job_id("j-run");
  for (int r = 1; r <= 2; ++r) {
    v1::SparsifyRoundResult& round = *response.add_rounds();
    round.set_round(r);
    v1::SparsityAllocation& a = *round.mutable_allocation();
    a.set_method("balanced");
    a.set_step(r == 1 ? 0.1 : 0.12);
    for (const char* name : {"model.layers.0.mlp.up_proj", "model.layers.0.mlp.down_proj"}) {
      v1::ComponentSparsity& c = *a.add_components();
      c.set_component(name);
      c.set_params(1000);
      c.set_target(r == 1 ? 0.1 : (std::string(name).find("up") != std::string::npos ? 0.15 : 0.3));
    }
    v1::TrainingResult& t = *round.mutable_training();
    t.set_masked_weights(r == 1 ? 200 : 450);
    t.add_losses(5.0);
    t.add_losses(4.5);
    t.set_output_dir(r == 1 ? "/runs/x/round-1" : "/runs/x/final");
    t.set_output_fingerprint("0123456789abcdef");
    round.mutable_metrics()->set_num_probes(8);
    round.mutable_metrics()->set_fdt75(3);
    round.set_train_seconds(2.5);
    if (r == 2) {
      for (auto [name, zeros] : {std::pair{"model.layers.0.mlp.up_proj", 150}, {"model.layers.0.mlp.down_proj", 299}}) {
        v1::ComponentZeros& z = *t.add_output_zeros();
        z.set_component(name);
        z.set_zeros(zeros);
        z.set_params(1000);
      }
    }
  }
  const std::string table = FormatResultsTable(response);
  EXPECT_THAT(table, HasSubstr("round  step  sparsity  measured"));
  EXPECT_THAT(table, HasSubstr("10.00%"));  // round 1: allocated 10 %, its masks 200 of 2000 = 10 %
  EXPECT_THAT(table, HasSubstr("22.50%"));  // round 2: 450 of 2000
  EXPECT_THAT(table, HasSubstr("5.000 -> 4.500"));
  EXPECT_THAT(table, HasSubstr("final model /runs/x/final: 22.4500% of the pruned components' weights are exactly 0; "
                               "largest difference from a component's target: 1.0 weights (model.layers.0.mlp.down_proj)"));
  const nlohmann::json doc = nlohmann::json::parse(FormatResultsJson(response));
  ASSERT_EQ(doc["rounds"].size(), 2u);
  EXPECT_DOUBLE_EQ(doc["rounds"][1]["measured_sparsity"].get<double>(), 0.225);
  EXPECT_DOUBLE_EQ(doc["rounds"][1]["output_sparsity"]["model.layers.0.mlp.down_proj"].get<double>(), 0.299);
  EXPECT_EQ(doc["rounds"][1]["training"]["output_zeros"]["model.layers.0.mlp.up_proj"]["zeros"], 150);
  const std::string csv = FormatResultsCsv(response);
  EXPECT_THAT(csv, HasSubstr("round,step,sparsity,measured_sparsity,first_loss,last_loss,fdt75"));
  EXPECT_THAT(csv, HasSubstr("\n2,0.12,"));

  v1::JobProgress p;
  p.set_state(v1::JOB_STATE_RUNNING);
  p.set_sparsify_round(2);
  p.set_sparsify_rounds(8);
  p.set_sparsify_stage("train");
  p.set_train_step(3);
  p.set_train_steps(500);
  p.set_train_loss(2.5);
  EXPECT_THAT(RenderProgress(p, 8, 0), HasSubstr("round 2/8 train step 3/500 loss 2.5000"));
}

}  // namespace
}  // namespace dtm::cli
