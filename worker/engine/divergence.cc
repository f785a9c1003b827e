#include "worker/engine/divergence.h"

#include <algorithm>
#include <cmath>

#include "common/quantile.h"

namespace dtm {

std::vector<ProbeDivergence> DivergenceFromLogits(const torch::Tensor& logits, const torch::Tensor& targets) {
  TORCH_CHECK(logits.dim() == 3 && targets.dim() == 2 && logits.size(0) == targets.size(0) &&
                  logits.size(1) == targets.size(1),
              "logits [B, M, V] and targets [B, M] disagree");
  const int64_t b = logits.size(0), m = logits.size(1);
  torch::Tensor logits32 = logits.to(torch::kFloat32);
  torch::Tensor t = targets.to(logits.device(), torch::kInt64);

  torch::Tensor diverges = logits32.argmax(-1).ne(t);  // [B, M]
  torch::Tensor sdt = diverges.sum(-1);                // [B]
  // The first divergent index: argmax over a position-weighted mask picks the first true entry;
  // probes with none get M.
  torch::Tensor positions = torch::arange(m, 0, -1, t.options());  // m, m-1, ..., 1
  torch::Tensor first = (diverges.to(torch::kInt64) * positions).argmax(-1);
  torch::Tensor fdt = torch::where(sdt.gt(0), first, torch::full_like(first, m));
  torch::Tensor nll = -torch::log_softmax(logits32, -1).gather(-1, t.unsqueeze(-1)).squeeze(-1).to(torch::kFloat64).mean(-1);

  fdt = fdt.cpu();
  sdt = sdt.cpu();
  nll = nll.cpu();
  std::vector<ProbeDivergence> out(b);
  for (int64_t i = 0; i < b; ++i) {
    out[i].fdt = fdt[i].item<int64_t>();
    out[i].sdt = sdt[i].item<int64_t>();
    out[i].nll = nll[i].item<double>();
  }
  return out;
}

DivergenceSummary Summarize(const std::vector<ProbeDivergence>& probes, int64_t completion_len) {
  DivergenceSummary s;
  s.fdt_histogram.assign(static_cast<size_t>(completion_len) + 1, 0);
  if (probes.empty()) return s;
  std::vector<double> fdts;
  fdts.reserve(probes.size());
  for (const ProbeDivergence& p : probes) {
    fdts.push_back(static_cast<double>(p.fdt));
    s.fdt_mean += static_cast<double>(p.fdt);
    s.sdt_mean += static_cast<double>(p.sdt);
    s.dppl += std::exp(p.nll);
    s.nll_mean += p.nll;
    if (p.fdt >= 0 && p.fdt <= completion_len) ++s.fdt_histogram[p.fdt];
  }
  const double n = static_cast<double>(probes.size());
  s.fdt_mean /= n;
  s.sdt_mean /= n;
  s.dppl /= n;
  s.nll_mean /= n;
  s.fdt75 = Quantile(std::move(fdts), 0.75);
  return s;
}

}  // namespace dtm
