// The Divergent Token Metrics (SPEC "Probes, baseline and metrics"): per-probe FDT, SDT and NLL
// of a model against a baseline sequence, and their aggregates over a probe set.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace dtm {

struct ProbeDivergence {
  int64_t fdt = 0;  // first divergent token, counted from the first completion token; M when none
  int64_t sdt = 0;  // number of divergent tokens among the M completion tokens
  double nll = 0;   // mean negative log-likelihood of the M completion tokens
};

// logits [B, M, V]: the logits that predict the M completion tokens `targets` [B, M].
// One pass: argmax (ties to the lowest id) and log-softmax in float32.
std::vector<ProbeDivergence> DivergenceFromLogits(const torch::Tensor& logits, const torch::Tensor& targets);


struct DivergenceSummary {
  double fdt75 = 0;     // the paper's ranking value
  double fdt_mean = 0;
  double sdt_mean = 0;
  double dppl = 0;      // mean over probes of exp(nll), the paper's Eq. 2
  double nll_mean = 0;
  std::vector<int64_t> fdt_histogram;  // fdt_histogram[k] = number of probes with FDT k, k in [0, M]
};

// completion_len sizes the histogram (FDT values lie in [0, completion_len]).
DivergenceSummary Summarize(const std::vector<ProbeDivergence>& probes, int64_t completion_len);

}  // namespace dtm
