// Whole-file reads and writes for tests that build or damage files byte by byte.
#pragma once

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace dtm::testing {

inline std::string ReadBytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void WriteBytes(const std::filesystem::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << bytes;
}

}  // namespace dtm::testing
