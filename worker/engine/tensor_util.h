// Compute precision and device, as users name them on the command line.
#pragma once

#include <string>
#include <vector>

#include <torch/torch.h>

#include "common/status.h"

namespace dtm {

// "float32" | "float16" | "bfloat16" (also "fp32", "f32", "fp16", "f16", "bf16").
StatusOr<torch::ScalarType> ParseDType(const std::string& name);
// The canonical name ("float32", "float16", "bfloat16"): part of every cache key.
std::string DTypeName(torch::ScalarType dtype);

// A shape as an error message shows it: "[4096, 11008]".
std::string ShapeString(const std::vector<int64_t>& shape);

// "cpu", "cuda", "cuda:N"; "auto" picks cuda when available.
StatusOr<torch::Device> ParseDevice(const std::string& name);
// float32 on CPU, bfloat16 on GPU: the defaults of `--dtype`.
torch::ScalarType DefaultDTypeFor(const torch::Device& device);

// OK when this libtorch can multiply matrices of `dtype` on `device` (a tiny matmul, tried once per
// call): Debian's libtorch 1.13 has no float16 matmul on CPU, which would otherwise fail inside the
// first forward, after the model loaded and a job started. FAILED_PRECONDITION naming both and
// libtorch's reason.
Status CheckDTypeOnDevice(torch::ScalarType dtype, const torch::Device& device);

// The libtorch this binary runs, for --version: "libtorch 1.13.0, no CUDA" or "libtorch 2.11.0, CUDA
// runtime 13.0".
std::string LibtorchBuildText();

}  // namespace dtm
