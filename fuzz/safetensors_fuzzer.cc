// safetensors: SafetensorsFile::Open validates the whole header before any tensor byte is touched
// and promises that later loads stay in bounds, so every tensor it accepts is loaded here, as is and
// converted, under ASan.
#include <cstdint>
#include <cstdlib>
#include <string>

#include <torch/torch.h>

#include "temp_input_file.h"
#include "worker/engine/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static dtm::fuzz::TempInputFile file(".safetensors");
  dtm::StatusOr<std::unique_ptr<dtm::SafetensorsFile>> opened = dtm::SafetensorsFile::Open(file.Write(data, size));
  if (!opened.ok()) {
    if (opened.status().code() != dtm::StatusCode::kDataLoss) std::abort();  // the header's own errors
    return 0;
  }
  const dtm::SafetensorsFile& st = **opened;
  for (const dtm::SafetensorsTensorInfo& info : st.tensors()) {
    if (st.Find(info.name) != &info) std::abort();
    if (st.RawBytes(info).size() != info.num_bytes()) std::abort();
    dtm::StatusOr<torch::Tensor> tensor = st.Load(info.name);
    if (tensor.ok() && static_cast<uint64_t>(tensor->nbytes()) != info.num_bytes()) std::abort();
    dtm::StatusOr<torch::Tensor> converted = st.LoadAs(info.name, torch::kFloat32, torch::kCPU);
    (void)converted;
  }
  return 0;
}
