// The standard llama GGUF convention (DESIGN.md §5) on the writing side:
// tensor names, shapes and per-tensor types for a quantization scheme, the
// metadata keys, and the Q/K row permutation from Hugging Face's layout.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "model/llama.h"

namespace sg {

namespace gguf { class Writer; }
struct Vocab;

// A file type: one DType for the big matrices, or llama.cpp's Q4_K_M mix.
struct QuantScheme {
  DType base = DType::F32;
  bool q4_k_m = false;
  std::string name() const;
};
std::optional<QuantScheme> parse_quant_scheme(std::string_view s);  // "f16", "q4_k_m", ...

struct TensorSpec {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order, innermost first
  DType type;
};

// Type of one llama tensor under a scheme. Norms stay F32. Q4_K_M follows
// llama.cpp: output → Q6_K; attn_v and ffn_down → Q6_K in the first and last
// eighth of the layers and every third layer between, else Q4_K. A K-quant on
// a row length that is not a multiple of 256 falls back to Q8_0 (then F32).
DType llama_tensor_type(const QuantScheme& s, std::string_view name, int64_t layer,
                        int64_t n_layers, int64_t row_len);
std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& c, const QuantScheme& s);

// Writes general.* and llama.* keys, and tokenizer.ggml.* when vocab is given.
void write_llama_metadata(gguf::Writer& w, const LlamaConfig& c, const QuantScheme& s,
                          const std::string& name, const Vocab* vocab);

// Hugging Face stores q_proj/k_proj for rotate-half RoPE; GGUF stores them
// row-permuted for interleaved RoPE. Permutes rows of a [rows × cols] matrix.
void permute_qk_rows(const float* in, float* out, int64_t rows, int64_t cols, int64_t n_heads);

}  // namespace sg
