#include "report/report_page.h"

#include <initializer_list>
#include <string_view>

#include "common/version.h"
#include "report/report_assets.h"

namespace dtm::report {
namespace {

struct Part {
  std::string_view marker;
  std::string_view text;
};

// The template with each marker replaced by its part, in one pass over the template only: a part
// (the job's data, say, which holds user text) is never searched for markers.
std::string Fill(std::string_view page_template, std::initializer_list<Part> parts) {
  std::string out;
  size_t at = 0;
  while (at < page_template.size()) {
    size_t next = std::string_view::npos;
    const Part* found = nullptr;
    for (const Part& part : parts) {
      const size_t where = page_template.find(part.marker, at);
      if (where < next) {
        next = where;
        found = &part;
      }
    }
    if (found == nullptr) break;
    out.append(page_template.substr(at, next - at));
    out.append(found->text);
    at = next + found->marker.size();
  }
  if (at < page_template.size()) out.append(page_template.substr(at));
  return out;
}


}  // namespace

std::string HtmlText(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string ScriptSafeJson(const nlohmann::json& json) {
  // error_handler replace: a string that is not valid UTF-8 (a path, say) cannot stop the report.
  const std::string text = json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::string out;
  out.reserve(text.size() + 64);
  for (char c : text) {
    switch (c) {
      case '<': out += "\\u003c"; break;
      case '>': out += "\\u003e"; break;
      case '&': out += "\\u0026"; break;
      default: out += c;
    }
  }
  return out;
}

std::string ReportHtml(const nlohmann::json& document, const ReportPageOptions& options) {
  nlohmann::json doc = document;
  if (options.live) doc["live"] = {{"document_url", options.document_url}, {"refresh_ms", options.refresh_ms}};
  const nlohmann::json& job = doc.contains("job") ? doc["job"] : nlohmann::json::object();
  std::string title = "dtm report";
  if (job.is_object()) {
    const std::string kind = job.value("kind", "");
    const std::string id = job.value("job_id", "");
    const std::string name = job.value("name", "");
    title = "dtm " + kind + " " + id + (name.empty() ? "" : " (" + name + ")");
  }
  // Inline style and script only, no other source of anything; a live page may also fetch from
  // its own origin.
  const std::string csp = std::string("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; ") +
                          "img-src data:; connect-src " + (options.live ? "'self'" : "'none'");
  const std::string data = ScriptSafeJson(doc);
  const std::string escaped_title = HtmlText(title);
  return Fill(kPageTemplate, {{"@DTM_CSP@", csp},
                              {"@DTM_VERSION@", kDtmVersion},
                              {"@DTM_TITLE@", escaped_title},
                              {"@DTM_CSS@", kStyle},
                              {"@DTM_JS@", kScript},
                              {"@DTM_DATA@", data}});
}

}  // namespace dtm::report
