// Consistency checks of the token sets users and other tools hand to dtm: probe sets, baselines and
// calibration sets (SPEC "Probes, baseline and metrics").
//
// The readers (probe_file.h, baseline_file.h) check each row's syntax; these check what only the
// whole set, or the model's vocabulary, can tell:
//   - every id is non-empty and unique (results are reported and joined by id; two rows with one id
//     would be silently merged or mismatched by whoever reads the results);
//   - every probe holds at least one token;
//   - a baseline has ONE prefix length n and ONE total length N for all its rows: SPEC defines the
//     baseline as G(F, y[:n], N) for a fixed n and N, and fdt75, fdt_mean and the FDT histogram
//     compare FDTs counted against one completion length. A row cut short or with another
//     prefix_len is an error of the file, not something evaluated per row;
//   - token ids lie in [0, vocab_size): an id outside reaches the embedding lookup, where libtorch
//     would fail with "index out of range in self", which names neither file nor row.
//
// Free of libtorch: the coordinator checks a job's probe file with them before any worker sees it,
// the engine before any token reaches the model. Every error is INVALID_ARGUMENT and one line:
// `where` (a file path, "task 1a2b..."), the row as its 1-based position in the set (as the readers
// count rows; blank lines of a file are not counted) with its id quoted and cut to about 100 bytes,
// and what is wrong, in numbers. A row's tokens are never quoted.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/baseline_file.h"
#include "common/probe_file.h"
#include "common/status.h"

namespace dtm {

// Checks a probe set (a probe file, a calibration file, a task's prefixes): at least one probe, ids
// non-empty and unique, at least one token per probe, token ids non-negative and, when vocab_size
// > 0, below vocab_size. vocab_size = 0 means the vocabulary is unknown (e.g. the coordinator before
// it knows the model): the upper bound is then not checked. Probes may differ in length.
Status CheckProbeSet(const ProbeSet& set, const std::string& where, int64_t vocab_size);

// CheckProbeSet's checks for the rows of a baseline, plus: 1 <= prefix_len < len(tokens), and one
// prefix_len and one len(tokens) for every row (those of row 1). vocab_size as for CheckProbeSet.
Status CheckBaseline(const Baseline& baseline, const std::string& where, int64_t vocab_size);

// Every probe of the set has as many tokens as the first: the probes of one baseline share their
// prefix length n. An empty set passes.
Status CheckEqualProbeLengths(const ProbeSet& set, const std::string& where);

}  // namespace dtm
