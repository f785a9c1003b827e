#include "worker/engine/tensor_util.h"

#include <ATen/Context.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

namespace dtm {

StatusOr<torch::ScalarType> ParseDType(const std::string& name) {
  if (name == "float32" || name == "fp32" || name == "f32") return torch::kFloat32;
  if (name == "float16" || name == "fp16" || name == "f16") return torch::kFloat16;
  if (name == "bfloat16" || name == "bf16") return torch::kBFloat16;
  return InvalidArgumentError("unknown dtype '" + name + "': expected float32, float16 or bfloat16");
}

std::string DTypeName(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kFloat32: return "float32";
    case torch::kFloat16: return "float16";
    case torch::kBFloat16: return "bfloat16";
    default: return std::string(c10::toString(dtype));
  }
}

StatusOr<torch::Device> ParseDevice(const std::string& name) {
  if (name == "auto") return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  try {
    torch::Device device(name);
    if (device.is_cuda() && !torch::cuda::is_available()) {
      return FailedPreconditionError("device '" + name + "' requested but this build or machine has no CUDA");
    }
    if (!device.is_cpu() && !device.is_cuda()) return InvalidArgumentError("unsupported device '" + name + "'");
    return device;
  } catch (const c10::Error&) {
    return InvalidArgumentError("unknown device '" + name + "': expected cpu, cuda or cuda:N");
  }
}

torch::ScalarType DefaultDTypeFor(const torch::Device& device) {
  return device.is_cuda() ? torch::kBFloat16 : torch::kFloat32;
}

Status CheckDTypeOnDevice(torch::ScalarType dtype, const torch::Device& device) {
  try {
    const torch::Tensor a = torch::ones({2, 2}, torch::TensorOptions().dtype(dtype).device(device));
    (void)torch::nn::functional::linear(a, a).sum().item<float>();
  } catch (const std::exception& e) {
    std::string reason = e.what();
    reason = reason.substr(0, reason.find('\n'));
    return FailedPreconditionError("--dtype " + DTypeName(dtype) + " does not run on " + device.str() +
                                   " with this libtorch (" + reason + "); use " +
                                   DTypeName(DefaultDTypeFor(device)) + " or another device");
  }
  return OkStatus();
}

std::string LibtorchBuildText() {
  std::string text = std::string("libtorch ") + TORCH_VERSION;
  if (!at::hasCUDA()) return text + ", no CUDA";
  // CUDART_VERSION as major * 1000 + minor * 10.
  const long cudart = at::detail::getCUDAHooks().versionCUDART();
  return text + ", CUDA runtime " + std::to_string(cudart / 1000) + "." + std::to_string(cudart % 1000 / 10);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace dtm
