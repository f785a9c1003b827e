// SHA-256 (FIPS 180-4), for content fingerprints of checkpoints, probe sets and cache keys.
//
// Implemented here rather than taken from OpenSSL so that the engine needs nothing but libtorch.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dtm {

// Incremental hasher. Not thread-safe; one per thread.
class Sha256 {
 public:
  Sha256();

  void Update(const void* data, size_t n);
  void Update(std::string_view s) { Update(s.data(), s.size()); }
  // Finalizes and returns the 64-character lowercase hex digest. The hasher must not be updated
  // afterwards; a second call returns the same digest.
  std::string HexDigest();

 private:
  void Compress(const uint8_t* block);

  std::array<uint32_t, 8> state_;
  std::array<uint8_t, 64> buffer_;
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
  bool finalized_ = false;
  std::string digest_;
};

// The hex digest of `data`.
std::string Sha256Hex(std::string_view data);

}  // namespace dtm
