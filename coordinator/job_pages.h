// The coordinator's read-only job pages, served on its HTTP listener beside /metrics
// (--metrics-listen; `dtmctl local --metrics-listen` too):
//   GET /jobs                   every job, newest first: state, kind, name, progress, created;
//                               the page reloads itself every 5 s;
//   GET /jobs/ID                the job's report (report/report_page.h) as a live page: progress,
//                               ETA and the figures, fetched again every 3 s until the job ends;
//   GET /jobs/ID/report.json    the document that page draws (report/report_document.h).
// When the coordinator requires a token (--token-file), so does every page: HTTP Basic
// authentication with the token as the password and any user name (a browser asks for it in its
// login prompt and sends it again on the page's own requests), or "Authorization: Bearer TOKEN"
// (curl, scripts); anything else gets 401. Without TLS on this listener the token crosses the network
// in clear, like /metrics' contents: keep the listener on loopback or behind a TLS proxy.
//
// Cost at scale: each /jobs/ID refresh reads every result row of the job from the store, about
// 2.7 MB for a Llama-2-7B probe job of 224 components x 5 methods (fdt histograms of 601 bins).
#pragma once

#include <string>
#include <vector>

#include "common/metrics_http_server.h"
#include "coordinator/client_api.h"

namespace dtm {

// Pages answered from `client` (not owned; must outlive the server that serves them). An empty
// `token` leaves them open.
std::vector<HttpPage> JobPages(ClientApi* client, std::string token);

// Whether an Authorization header value carries `token` (Bearer, or Basic with it as the
// password); true for any value when `token` is empty.
bool PageAuthorized(const std::string& authorization, const std::string& token);

}  // namespace dtm
