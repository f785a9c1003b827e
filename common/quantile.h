// The quantile that SPEC's fdt75 uses, shared by the engine (one process's summary) and the
// coordinator (shards aggregated), so that both report the same number for the same values.
#pragma once

#include <vector>

namespace dtm {

// The q-quantile with linear interpolation between order statistics (NumPy's default, R type 7);
// NaN for no values.
double Quantile(std::vector<double> values, double q);

}  // namespace dtm
