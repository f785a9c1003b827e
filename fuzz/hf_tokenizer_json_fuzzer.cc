// HF tokenizer.json (with tokenizer_config.json after a NUL byte, which JSON text cannot hold), and
// the tokenizer built from it (ReadHfTokenizerJsonFile only adds reading the two files).
#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer_checks.h"
#include "worker/engine/hf_tokenizer_json.h"
#include "worker/engine/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string_view json = input.substr(0, nul);
  const std::string_view config = nul == std::string_view::npos ? std::string_view() : input.substr(nul + 1);

  dtm::StatusOr<dtm::HfTokenizerJson> parsed = dtm::ParseHfTokenizerJson(json, config, "tokenizer.json");
  if (!parsed.ok()) return 0;
  const dtm::HfTokenizerJson& hf = *parsed;
  if (hf.types.size() != hf.pieces.size() || hf.in_model_vocab.size() != hf.pieces.size()) std::abort();

  dtm::StatusOr<std::unique_ptr<dtm::Tokenizer>> tokenizer = dtm::Tokenizer::FromHfJson(json, config, "tokenizer.json");
  if (!tokenizer.ok()) return 0;
  dtm::fuzz::CheckTokenizer(**tokenizer, "");
  return 0;
}
