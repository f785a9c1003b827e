// The report page's template, style and script (report/web), compiled in by embed_assets.cmake.
#pragma once

namespace dtm::report {

// report/web/report.html: the page, with @DTM_TITLE@, @DTM_CSP@, @DTM_VERSION@, @DTM_CSS@,
// @DTM_JS@ and @DTM_DATA@ where report_page.cc puts its parts.
extern const char kPageTemplate[];
// report/web/report.css
extern const char kStyle[];
// report/web/report.js: draws every figure from the page's embedded JSON document.
extern const char kScript[];

}  // namespace dtm::report
