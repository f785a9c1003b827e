#include "worker/engine/engine_error.h"

#include <gtest/gtest.h>

#include <new>
#include <stdexcept>

#include <torch/torch.h>

namespace dtm {
namespace {

TEST(EngineErrorTest, CpuAllocationFailureIsResourceExhausted) {
  // 2^50 floats (4 PiB) exceed any address space, so the allocator fails at once, touching nothing.
  Status status;
  try {
    torch::Tensor t = torch::empty({int64_t{1} << 50}, torch::kFloat32);
    FAIL() << "allocated " << t.numel() << " floats";
  } catch (const std::exception& e) {
    status = StatusFromException(e, "evaluation forward failed");
  }
  EXPECT_EQ(status.code(), StatusCode::kResourceExhausted) << status.ToString();
  EXPECT_EQ(status.message().rfind("evaluation forward failed: ", 0), 0u) << status.message();
  EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
}

TEST(EngineErrorTest, CudaOutOfMemoryAndBadAllocAreResourceExhausted) {
  const c10::OutOfMemoryError cuda({"f", "file.cpp", 1}, "CUDA out of memory. Tried to allocate 2.00 GiB");
  EXPECT_EQ(StatusFromException(cuda, "x").code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusFromException(std::bad_alloc(), "x").code(), StatusCode::kResourceExhausted);
  const c10::Error cuda_check({"f", "file.cpp", 1}, "CUDA error: out of memory");
  EXPECT_EQ(StatusFromException(cuda_check, "x").code(), StatusCode::kResourceExhausted);
}

TEST(EngineErrorTest, OtherEngineErrorsAreInternalOnOneLine) {
  Status status;
  try {
    torch::Tensor a = torch::zeros({2, 3});
    torch::Tensor b = torch::zeros({4, 5});
    (void)torch::matmul(a, b);
    FAIL() << "mismatched matmul did not throw";
  } catch (const std::exception& e) {
    status = StatusFromException(e, "greedy generation failed");
  }
  EXPECT_EQ(status.code(), StatusCode::kInternal) << status.ToString();
  EXPECT_EQ(status.message().find('\n'), std::string::npos) << status.message();
  EXPECT_EQ(StatusFromException(std::runtime_error("boom\nmore"), "c").message(), "c: boom");
}

}  // namespace
}  // namespace dtm
