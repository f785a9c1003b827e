#include "cli/progress_bar.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string_view>

namespace dtm::cli {

std::string JobStateName(v1::JobState state) {
  // "JOB_STATE_RUNNING" -> "RUNNING"; a value this build does not know prints as its number.
  const std::string& name = v1::JobState_Name(state);
  constexpr std::string_view kPrefix = "JOB_STATE_";
  if (name.rfind(kPrefix, 0) != 0) return std::to_string(static_cast<int>(state));
  return name.substr(kPrefix.size());
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_CANCELLED;
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const long long total = std::llround(seconds);
  const long long hours = total / 3600, minutes = total % 3600 / 60, secs = total % 60;
  char buf[48];
  if (hours > 0) {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", hours, minutes);
  } else if (minutes > 0) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", minutes, secs);
  } else {
    std::snprintf(buf, sizeof buf, "%llds", secs);
  }
  return buf;
}

namespace {

std::string Bar(uint32_t done, uint32_t total, int width) {
  width = std::max(width, 1);
  // 0/0 (no task known yet) draws an empty bar, never a full one.
  const int filled = total == 0 ? 0 : static_cast<int>(std::min<uint64_t>(done, total) * width / total);
  return "[" + std::string(filled, '#') + std::string(width - filled, '.') + "]";
}

std::string TaskCounts(const v1::JobProgress& p) {
  std::string s = std::to_string(p.tasks_done()) + "/" + std::to_string(p.tasks_total()) + " tasks";
  std::string notes;
  if (p.tasks_cached() > 0) notes = std::to_string(p.tasks_cached()) + " cached";
  if (p.tasks_failed() > 0)
    notes += (notes.empty() ? "" : ", ") + std::to_string(p.tasks_failed()) + " failed";
  if (!notes.empty()) s += "  (" + notes + ")";
  return s;
}

}  // namespace

std::string RenderProgress(const v1::JobProgress& p, int bar_width, uint32_t completion_len) {
  char buf[64];
  std::string line;
  if (p.has_sparsify_rounds()) {
    // A sparsify run: the bar follows the rounds; a training stage adds its steps.
    const bool done = p.sparsify_stage() == "done";
    const uint32_t rounds_done = done ? p.sparsify_rounds() : (p.sparsify_round() > 0 ? p.sparsify_round() - 1 : 0);
    line = Bar(rounds_done, p.sparsify_rounds(), bar_width) + " round " + std::to_string(p.sparsify_round()) + "/" +
           std::to_string(p.sparsify_rounds()) + (p.has_sparsify_stage() ? " " + p.sparsify_stage() : "");
    if (p.sparsify_stage() == "train" && p.has_train_steps()) {
      std::snprintf(buf, sizeof buf, " step %u/%u loss %.4f", p.train_step(), p.train_steps(), p.train_loss());
      line += buf;
    }
  } else if (p.has_train_steps()) {
    // A train job is one task of many steps: the bar follows the steps.
    std::snprintf(buf, sizeof buf, " step %u/%u  loss %.4f", p.train_step(), p.train_steps(), p.train_loss());
    line = Bar(p.train_step(), p.train_steps(), bar_width) + buf;
  } else {
    line = Bar(p.tasks_done(), p.tasks_total(), bar_width) + " " + TaskCounts(p);
  }
  if (p.probes_per_second() > 0) {
    std::snprintf(buf, sizeof buf, "  %.1f probes/s", p.probes_per_second());
    line += buf;
  }
  // A finished job has nothing left to wait for, whatever the last estimate said.
  if (p.has_eta_seconds() && !IsTerminal(p.state())) line += "  ETA " + FormatDuration(p.eta_seconds());
  line += "  " + JobStateName(p.state());
  if (p.has_search_level()) line += "  level " + std::to_string(p.search_level());
  if (p.has_best_fdt75()) {
    std::snprintf(buf, sizeof buf, "  best fdt75 %.2f", p.best_fdt75());
    line += buf;
    if (completion_len > 0 && p.best_fdt75() >= completion_len) line += " (saturated)";
  }
  if (!p.message().empty()) line += "  " + p.message();
  return line;
}

bool ProgressLogFilter::ShouldPrint(const v1::JobProgress& p) {
  const long level = p.has_search_level() ? static_cast<long>(p.search_level()) : -1;
  const uint64_t done = p.has_train_steps() ? p.train_step() : p.tasks_done();
  const uint64_t total = p.has_train_steps() ? p.train_steps() : p.tasks_total();
  const int decile = total == 0 ? 0 : static_cast<int>(std::min<uint64_t>(done, total) * 10 / total);
  const bool print = !printed_any_ || p.state() != state_ || p.message() != message_ ||
                     level != search_level_ || decile > decile_;
  if (!print) return false;
  printed_any_ = true;
  state_ = p.state();
  message_ = p.message();
  search_level_ = level;
  // A search adds tasks as it opens levels, so the fraction can fall; follow it down too.
  decile_ = decile;
  return true;
}

}  // namespace dtm::cli
