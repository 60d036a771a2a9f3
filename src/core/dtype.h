// Weight element types, numbered exactly as GGUF/ggml number them so that a
// type read from a file can be used directly. Block layouts are in quant.h.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace sg {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q8_0 = 8,
  Q4_K = 12,
  Q6_K = 14,
  Q8_K = 15,  // activation-side type of the K-quants (not stored in files we write)
  BF16 = 30,
};

struct DTypeTraits {
  std::string_view name;   // lower-case, as on the command line: "q4_k"
  int64_t block_elems;     // weights per block (1 for plain floats)
  size_t block_bytes;      // bytes per block
};

// nullopt for a type number this project does not support.
std::optional<DTypeTraits> dtype_traits(uint32_t type);
const DTypeTraits& traits(DType t);  // t must be supported
std::optional<DType> dtype_from_name(std::string_view name);  // "f16", "Q4_K", ...

// Bytes of a row of n elements; n must be a multiple of block_elems.
inline size_t row_bytes(DType t, int64_t n) {
  const auto& tr = traits(t);
  return static_cast<size_t>(n / tr.block_elems) * tr.block_bytes;
}

}  // namespace sg
