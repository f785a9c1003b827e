#include "report/report_page.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "report/report_assets.h"
#include "report/report_document.h"

namespace dtm::report {
namespace {

std::string SourceFile(const std::string& relative) {
  const char* root = std::getenv("DTM_SOURCE_DIR");
  std::ifstream in(std::string(root ? root : ".") + "/" + relative, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The JSON between the data element's tags.
std::string EmbeddedData(const std::string& page) {
  const std::string open = "<script type=\"application/json\" id=\"dtm-data\">";
  const size_t start = page.find(open);
  if (start == std::string::npos) return "";
  const size_t end = page.find("</script>", start);
  return page.substr(start + open.size(), end - start - open.size());
}

v1::Job ProbeJob() {
  v1::Job job;
  job.set_job_id("j-1");
  job.set_state(v1::JOB_STATE_SUCCEEDED);
  job.set_spec_yaml("kind: probe\nname: '</script><script>alert(1)</script> @DTM_JS@'\n");
  job.mutable_summary()->set_kind(v1::JOB_KIND_PROBE);
  job.mutable_summary()->set_name("</script><script>alert(1)</script> @DTM_JS@");
  job.mutable_summary()->set_num_probes(16);
  job.mutable_summary()->set_completion_len(32);
  job.mutable_summary()->set_dtype(v1::DTYPE_BF16);
  job.mutable_create_time()->set_seconds(1700000000);
  job.mutable_start_time()->set_seconds(1700000010);
  job.mutable_end_time()->set_seconds(1700000070);
  job.mutable_end_time()->set_nanos(500000000);
  job.mutable_progress()->set_tasks_total(8);
  job.mutable_progress()->set_tasks_done(8);
  return job;
}

v1::GetResultsResponse ProbeResults() {
  v1::GetResultsResponse results;
  results.set_job_id("j-1");
  results.set_state(v1::JOB_STATE_SUCCEEDED);
  v1::ConfigResult* row = results.add_results();
  row->set_config("model.layers.0.mlp.up_proj=int8-absmax");
  row->set_complete(true);
  row->mutable_metrics()->set_fdt75(17.25);
  row->mutable_metrics()->set_num_probes(16);
  return results;
}

TEST(ReportPageTest, TheScriptAndStyleAreTheFilesInReportWeb) {
  ASSERT_FALSE(SourceFile("report/web/report.js").empty()) << "DTM_SOURCE_DIR unset?";
  EXPECT_EQ(std::string(kScript), SourceFile("report/web/report.js"));
  EXPECT_EQ(std::string(kStyle), SourceFile("report/web/report.css"));
  EXPECT_EQ(std::string(kPageTemplate), SourceFile("report/web/report.html"));
}

TEST(ReportPageTest, ScriptSafeJsonCannotCloseTheElementAndParsesBack) {
  const nlohmann::json doc = {{"name", "</script><b>&"}, {"x", 1.5}};
  const std::string text = ScriptSafeJson(doc);
  EXPECT_EQ(text.find_first_of("<>&"), std::string::npos) << text;
  EXPECT_EQ(nlohmann::json::parse(text), doc);
}

TEST(ReportPageTest, PageHoldsEveryPartOnceAndUserTextOnlyAsData) {
  const nlohmann::json doc = ReportDocument(ProbeJob(), ProbeResults(), 1700000100);
  const std::string page = ReportHtml(doc);
  // find() rather than matchers: a failure should not print the whole page.
  for (const char* marker : {"@DTM_CSP@", "@DTM_VERSION@", "@DTM_TITLE@", "@DTM_CSS@", "@DTM_DATA@"}) {
    EXPECT_EQ(page.find(marker), std::string::npos) << marker;
  }
  // The name's "@DTM_JS@" is data (escaped in the JSON), the script is inlined once.
  EXPECT_EQ(page.find(kScript), page.rfind(kScript));
  EXPECT_NE(page.find(kScript), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(EmbeddedData(page)), doc);
  // Two elements only: the data's and the script's; the name cannot open a third.
  size_t scripts = 0;
  for (size_t at = page.find("<script"); at != std::string::npos; at = page.find("<script", at + 1)) ++scripts;
  EXPECT_EQ(scripts, 2u);
  EXPECT_NE(page.find("<title>dtm probe j-1 (&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt; @DTM_JS@)</title>"),
            std::string::npos);
  EXPECT_NE(page.find("default-src 'none'"), std::string::npos);
  EXPECT_NE(page.find("connect-src 'none'"), std::string::npos);
  // Nothing to load: no source, link or stylesheet URL (the SVG namespace URI is a name, not a load).
  for (const char* load : {"src=", "href=\"http", "url(", "@import", "https://"}) {
    EXPECT_EQ(page.find(load), std::string::npos) << load;
  }
}

TEST(ReportPageTest, LivePageMayFetchItsOwnDocumentOnly) {
  ReportPageOptions live;
  live.live = true;
  live.document_url = "/jobs/j-1/report.json";
  live.refresh_ms = 1500;
  const std::string page = ReportHtml(ReportDocument(ProbeJob(), ProbeResults(), 1700000100), live);
  EXPECT_NE(page.find("connect-src 'self'"), std::string::npos);
  const nlohmann::json data = nlohmann::json::parse(EmbeddedData(page));
  EXPECT_EQ(data["live"]["document_url"], "/jobs/j-1/report.json");
  EXPECT_EQ(data["live"]["refresh_ms"], 1500);
}

// The issue's bound: a few MB at most for a 7B-sized job. A Llama-2-7B probe job: 32 layers x 7
// kinds x 5 methods, 1000 probes, completion 600 (601-bin histograms), metrics at full precision.
TEST(ReportPageTest, ASevenBSizedProbeJobMakesAPageOfAFewMegabytes) {
  v1::Job job = ProbeJob();
  job.mutable_summary()->set_num_probes(1000);
  job.mutable_summary()->set_completion_len(600);
  v1::GetResultsResponse results;
  uint64_t seed = 12345;
  auto next = [&seed] {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(seed >> 33);
  };
  const char* kinds[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
  for (const char* method : {"int8-absmax", "int8-absmax-row", "llm-int8", "gptq:4", "prune:0.5"}) {
    for (int layer = 0; layer < 32; ++layer) {
      for (const char* kind : kinds) {
        v1::ConfigResult* row = results.add_results();
        row->set_config("model.layers." + std::to_string(layer) + "." + kind + "=" + method);
        row->set_complete(true);
        v1::Metrics* m = row->mutable_metrics();
        m->set_num_probes(1000);
        m->set_fdt75(100 + next() % 500);
        m->set_fdt_mean(100 + (next() % 50000) / 97.0);
        m->set_sdt_mean((next() % 100000) / 131.0);
        m->set_dppl(5 + (next() % 100000) / 100003.0);
        m->set_nll_mean(1.7 + (next() % 100000) / 100003.0);
        std::vector<uint32_t> histogram(601, 0);
        for (int probe = 0; probe < 1000; ++probe) ++histogram[next() % 601];
        for (uint32_t c : histogram) m->add_fdt_histogram(c);
      }
    }
  }
  const std::string page = ReportHtml(ReportDocument(job, results, 1700000100));
  std::cout << "7B-sized probe job (1120 configs): page of " << page.size() << " bytes\n";
  EXPECT_LT(page.size(), 4u << 20);
  EXPECT_GT(page.size(), 1u << 20);  // every histogram is in: the page is not quietly cut
}

TEST(ReportDocumentTest, JobFactsAndResultsAsTheResultsJsonHasThem) {
  const nlohmann::json doc = ReportDocument(ProbeJob(), ProbeResults(), 1700000100);
  EXPECT_EQ(doc["dtm_report"], 1);
  EXPECT_EQ(doc["generated"], "2023-11-14T22:15:00Z");
  const nlohmann::json& job = doc["job"];
  EXPECT_EQ(job["kind"], "probe");
  EXPECT_EQ(job["state"], "SUCCEEDED");
  EXPECT_EQ(job["dtype"], "bfloat16");
  EXPECT_EQ(job["num_probes"], 16);
  EXPECT_EQ(job["create_time"], "2023-11-14T22:13:20Z");
  EXPECT_EQ(job["duration_seconds"], 60.5);
  EXPECT_TRUE(job["error"].is_null());
  EXPECT_EQ(job["progress"]["tasks_done"], 8);
  EXPECT_FALSE(job["progress"].contains("eta_seconds"));
  const nlohmann::json& row = doc["results"]["results"][0];
  EXPECT_EQ(row["config"], "model.layers.0.mlp.up_proj=int8-absmax");
  EXPECT_EQ(row["fdt75"], 17.25);
  EXPECT_EQ(row["layer"], 0);
  EXPECT_EQ(row["component"], "mlp.up_proj");
}

TEST(ReportDocumentTest, ARunningJobsDurationRunsToTheGenerationTime) {
  v1::Job job = ProbeJob();
  job.set_state(v1::JOB_STATE_RUNNING);
  job.clear_end_time();
  const nlohmann::json doc = ReportDocument(job, ProbeResults(), 1700000040);
  EXPECT_EQ(doc["job"]["duration_seconds"], 30.0);
  EXPECT_TRUE(doc["job"]["end_time"].is_null());
  job.clear_start_time();
  EXPECT_TRUE(ReportDocument(job, ProbeResults(), 1700000040)["job"]["duration_seconds"].is_null());
}

}  // namespace
}  // namespace dtm::report
