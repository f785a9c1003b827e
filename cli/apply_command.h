// `dtmctl apply`: a compression config applied to a model and written as a Hugging Face checkpoint
// folder, either as the float weights eval computes with or as compressed-tensors integer weights.
#pragma once

#include <cstdint>
#include <string>

#include "cli/engine_commands.h"
#include "common/status.h"

namespace dtm::cli {

// The config is applied in place exactly as `eval` applies it (Evaluator::Apply on the loaded model,
// computed in float32 and written back in the compute dtype); every weight goes to
// OUT/model.safetensors, config.json is copied (torch_dtype set when --dtype is given) and the
// tokenizer files are copied. Formats:
//  - float: compressed weights as the float weights eval computes with, the others unchanged. So
//    `eval --model OUT --compress ''` gives what `eval --model DIR --compress CONFIG` gives in the
//    same dtype; the folder is as large as the original.
//  - compressed-tensors (worker/engine/compressed_tensors.h): int8-absmax and int8-absmax-row as
//    symmetric 8-bit codes with float32 scales (W8A16, per tensor / per channel), gptq as asymmetric
//    codes with float32 scales and zero points (per channel or per group); 4 and 8 bits packed into
//    int32 (pack-quantized), 2 and 3 bits one int8 per code (naive-quantized), as compressed-tensors
//    itself chooses; pruned and untouched weights dense; config.json gets a quantization_config with
//    one config group per distinct scheme whose targets name exactly its modules, every other Linear
//    module in `ignore`. The weights dequantize to exactly the float format's, so eval of OUT (which
//    dequantizes on load) gives eval --compress's numbers. A gptq group size that does not divide a
//    chosen module's input columns is refused (the format has no partial group).
// llm-int8 is refused in both: its outlier columns depend on each input and cannot be stored as
// weights. OUT must not exist or be an empty folder. Prints the sizes: original and written bytes.
struct ApplyOptions {
  std::string model_dir;
  std::string compress;      // COMPONENT=METHOD,... (what `dtmctl export-config` prints)
  std::string out_dir;
  std::string format = "float";  // float | compressed-tensors
  std::string calibration;   // probe or baseline file; needed for gptq
  int64_t calibration_count = 128;
  int64_t calibration_seq_len = 2048;
  RuntimeOptions runtime;    // dtype empty: the checkpoint's stored dtype
};
Status ApplyCommand(const ApplyOptions& options);

}  // namespace dtm::cli
