// One self-contained HTML page from a report document (report_document.h): the page template,
// style and script of report/web inlined, the document embedded as JSON. The page makes no network
// request: its Content-Security-Policy allows none, except that a live page may fetch its own
// document again from the server that sent it.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace dtm::report {

struct ReportPageOptions {
  // A live page (the coordinator's /jobs/ID) fetches `document_url` (same origin) every
  // `refresh_ms` until the job is in a terminal state, and draws again.
  bool live = false;
  std::string document_url;
  int refresh_ms = 2000;
};

std::string ReportHtml(const nlohmann::json& document, const ReportPageOptions& options = {});

// `json` as text that is safe inside a <script> element: every '<', '>' and '&' written as a \u
// escape (still the same JSON), so that no string in it can close the element.
std::string ScriptSafeJson(const nlohmann::json& json);

// `text` safe as HTML text or a quoted attribute value: < > & " ' as character references.
std::string HtmlText(std::string_view text);

}  // namespace dtm::report
