#include "common/training_phases.h"

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <string>

namespace dtm {

StatusOr<std::vector<TrainingPhase>> ParseTrainingPhases(std::string_view text) {
  std::vector<TrainingPhase> phases;
  if (text.empty()) return InvalidArgumentError("phases: none given (e.g. masked:450,unmasked:50)");
  // Split by hand: getline would drop the empty item after a trailing comma.
  for (size_t begin = 0; begin <= text.size();) {
    const size_t comma = std::min(text.find(',', begin), text.size());
    const std::string item(text.substr(begin, comma - begin));
    begin = comma + 1;
    const size_t colon = item.find(':');
    const std::string kind = item.substr(0, colon);
    const std::string count = colon == std::string::npos ? "" : item.substr(colon + 1);
    TrainingPhase phase;
    if (kind == "masked") {
      phase.masked = true;
    } else if (kind == "unmasked") {
      phase.masked = false;
    } else {
      return InvalidArgumentError("phases: '" + item + "': a phase is masked:STEPS or unmasked:STEPS");
    }
    char* end = nullptr;
    errno = 0;
    const long long steps = count.empty() ? 0 : std::strtoll(count.c_str(), &end, 10);
    if (count.empty() || *end != '\0' || errno != 0 || steps < 1 || count[0] == '+' || count[0] == ' ') {
      return InvalidArgumentError("phases: '" + item + "': the steps must be a positive integer");
    }
    phase.steps = steps;
    phases.push_back(phase);
  }
  if (phases.empty()) return InvalidArgumentError("phases: none given (e.g. masked:450,unmasked:50)");
  return phases;
}

int64_t TotalSteps(const std::vector<TrainingPhase>& phases) {
  int64_t total = 0;
  for (const TrainingPhase& phase : phases) total += phase.steps;
  return total;
}

}  // namespace dtm
