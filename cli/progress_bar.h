// The progress line `dtmctl watch` draws from the JobProgress messages WatchJob streams. Pure
// functions of the messages, so the rendering is tested without a server or a terminal.
#pragma once

#include <cstdint>
#include <string>

#include "dtm/v1/job.pb.h"

namespace dtm::cli {

// "RUNNING", "SUCCEEDED", ...; an unknown value prints as its number ("7") so a newer server's
// states still show.
std::string JobStateName(v1::JobState state);

// SUCCEEDED, FAILED or CANCELLED: a job never leaves these.
bool IsTerminal(v1::JobState state);

// A duration for humans, rounded to the second: "45s", "1m05s", "2h03m" (seconds dropped past an
// hour, where they are noise); "?" for a negative or non-finite value.
std::string FormatDuration(double seconds);

// One line, no newline:
//   [#####.....] 120/480 tasks  (35 cached, 2 failed)  12.3 probes/s  ETA 1m05s  RUNNING
//   level 2  best fdt75 41.5  waiting for a worker serving /models/x
// `bar_width` is the number of cells between the brackets. Parts without a value (no cached tasks,
// no rate, no ETA, not a search, no message) are left out rather than printed as zeros. Given the
// job's completion length, a best fdt75 at that length is marked "(saturated)": it then cannot tell
// nodes apart (`results` says which metrics did).
std::string RenderProgress(const v1::JobProgress& progress, int bar_width = 30, uint32_t completion_len = 0);

// Decides when a non-TTY watcher (a log file, CI) prints a line: on the first message, when the
// state, search level or message changes, and each time another tenth of the tasks is done, so a
// job of 10,000 tasks writes about ten lines rather than one per task.
class ProgressLogFilter {
 public:
  // True if `progress` deserves a line; remembers it as the last one printed when it does.
  bool ShouldPrint(const v1::JobProgress& progress);

 private:
  bool printed_any_ = false;
  v1::JobState state_ = v1::JOB_STATE_UNSPECIFIED;
  std::string message_;
  long search_level_ = -1;  // -1: not a search
  int decile_ = 0;
};

}  // namespace dtm::cli
