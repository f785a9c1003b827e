#include "coordinator/job_pages.h"

#include <ctime>
#include <string_view>
#include <utility>

#include "cli/progress_bar.h"
#include "cli/results_format.h"
#include "common/grpc_security.h"
#include "report/report_assets.h"
#include "report/report_document.h"
#include "report/report_page.h"

namespace dtm {
namespace {

constexpr int kLiveRefreshMs = 3000;
// The job list shows at most this many jobs, newest first.
constexpr int kMaxListedJobs = 500;
constexpr char kHtml[] = "text/html; charset=utf-8";

// RFC 4648 base64, padded or not, appended to `out`; false at a character outside the alphabet.
bool DecodeBase64(std::string_view in, std::string* out) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : in) {
    const int v = value(c);
    if (v < 0) return false;
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return true;
}

HttpReply Reply(int status, std::string body, const char* content_type = "text/plain; charset=utf-8") {
  HttpReply reply;
  reply.status = status;
  reply.body = std::move(body);
  reply.content_type = content_type;
  // Job data changes under the page; and nothing here is to be framed or sniffed into another type.
  reply.headers = {{"Cache-Control", "no-store"},
                   {"X-Content-Type-Options", "nosniff"},
                   {"X-Frame-Options", "DENY"}};
  return reply;
}

HttpReply Unauthorized() {
  HttpReply reply = Reply(401, "dtm: this coordinator requires its token: give it as the password (any user name)\n");
  reply.headers.emplace_back("WWW-Authenticate", "Basic realm=\"dtm coordinator\", charset=\"UTF-8\"");
  return reply;
}

HttpReply FromStatus(const Status& status) {
  const int code = status.code() == StatusCode::kNotFound          ? 404
                   : status.code() == StatusCode::kInvalidArgument ? 400
                   : status.code() == StatusCode::kUnavailable     ? 503
                                                                   : 500;
  return Reply(code, "dtm: " + status.message() + "\n");
}

// The report document of one job: the job and every row of its results (all pages, every node).
StatusOr<nlohmann::json> Document(ClientApi* client, const std::string& job_id) {
  ASSIGN_OR_RETURN(v1::Job job, client->GetJob(job_id));
  v1::GetResultsRequest request;
  request.set_job_id(job_id);
  request.set_all_nodes(true);
  v1::GetResultsResponse all;
  do {
    ASSIGN_OR_RETURN(v1::GetResultsResponse page, client->Results(request));
    request.set_page_token(cli::AppendResultsPage(std::move(page), request.page_token(), &all));
  } while (!request.page_token().empty());
  return report::ReportDocument(job, all, std::time(nullptr));
}

HttpReply JobList(ClientApi* client) {
  v1::ListJobsRequest request;
  std::string rows;
  int listed = 0;
  bool more = false;
  while (true) {
    StatusOr<v1::ListJobsResponse> page = client->ListJobs(request);
    if (!page.ok()) return FromStatus(page.status());
    for (const v1::Job& job : page->jobs()) {
      if (listed == kMaxListedJobs) {
        more = true;
        break;
      }
      ++listed;
      const v1::JobProgress& p = job.progress();
      const std::string id = report::HtmlText(job.job_id());
      rows += "<tr><td class=\"config\"><a href=\"/jobs/" + id + "\">" + id + "</a></td><td>" +
              report::HtmlText(cli::JobStateName(job.state())) + "</td><td>" + report::HtmlText(cli::JobKindName(job.summary().kind())) +
              "</td><td class=\"config\">" + report::HtmlText(job.summary().name()) + "</td><td data-done=\"" +
              std::to_string(p.tasks_done()) + "\">" + std::to_string(p.tasks_done()) + " / " +
              std::to_string(p.tasks_total()) + "</td><td>" + report::HtmlText(cli::FormatUtc(job.create_time())) + "</td></tr>\n";
    }
    if (more || page->next_page_token().empty() || page->next_page_token() == request.page_token()) break;
    request.set_page_token(page->next_page_token());
  }
  std::string page = std::string("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">") +
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">" +
                     "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\">" +
                     "<meta http-equiv=\"refresh\" content=\"5\"><link rel=\"icon\" href=\"data:,\">" +
                     "<title>dtm jobs</title><style>" + report::kStyle + "</style></head><body>" +
                     "<header><h1>dtm jobs</h1><p class=\"sub\">" + std::to_string(listed) +
                     (more ? " newest jobs shown" : " jobs") + "; this page reloads every 5 s.</p></header><main>" +
                     "<div class=\"table-wrap\"><table class=\"results jobs\"><thead><tr><th class=\"config\">job</th>"
                     "<th>state</th><th>kind</th><th class=\"config\">name</th><th>tasks done</th><th>created (UTC)</th>"
                     "</tr></thead><tbody>\n" +
                     rows + "</tbody></table></div></main></body></html>\n";
  return Reply(200, std::move(page), kHtml);
}

}  // namespace

bool PageAuthorized(const std::string& authorization, const std::string& token) {
  if (token.empty()) return true;
  constexpr std::string_view kBearer = "Bearer ";
  constexpr std::string_view kBasic = "Basic ";
  const std::string_view header = authorization;
  if (header.substr(0, kBearer.size()) == kBearer) return ConstantTimeEquals(header.substr(kBearer.size()), token);
  if (header.substr(0, kBasic.size()) == kBasic) {
    std::string user_password;
    if (!DecodeBase64(header.substr(kBasic.size()), &user_password)) return false;
    const size_t colon = user_password.find(':');
    return colon != std::string::npos && ConstantTimeEquals(std::string_view(user_password).substr(colon + 1), token);
  }
  return false;
}

std::vector<HttpPage> JobPages(ClientApi* client, std::string token) {
  // Job ids are the coordinator's ("j-" and hex); the pattern bounds what reaches the store.
  constexpr char kJobId[] = "([A-Za-z0-9_-]{1,128})";
  std::vector<HttpPage> pages;
  pages.push_back({"/jobs/?", [client, token](const HttpRequest& request) {
                     if (!PageAuthorized(request.authorization, token)) return Unauthorized();
                     return JobList(client);
                   }});
  pages.push_back({std::string("/jobs/") + kJobId, [client, token](const HttpRequest& request) {
                     if (!PageAuthorized(request.authorization, token)) return Unauthorized();
                     StatusOr<nlohmann::json> doc = Document(client, request.captures.at(0));
                     if (!doc.ok()) return FromStatus(doc.status());
                     report::ReportPageOptions live;
                     live.live = true;
                     live.document_url = "/jobs/" + request.captures.at(0) + "/report.json";
                     live.refresh_ms = kLiveRefreshMs;
                     HttpReply reply = Reply(200, report::ReportHtml(*doc, live), kHtml);
                     return reply;
                   }});
  pages.push_back({std::string("/jobs/") + kJobId + "/report.json", [client, token](const HttpRequest& request) {
                     if (!PageAuthorized(request.authorization, token)) return Unauthorized();
                     StatusOr<nlohmann::json> doc = Document(client, request.captures.at(0));
                     if (!doc.ok()) return FromStatus(doc.status());
                     return Reply(200, doc->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                                  "application/json");
                   }});
  return pages;
}

}  // namespace dtm
