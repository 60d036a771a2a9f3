#include "model/llama_file.h"

#include <cstring>

#include "core/error.h"
#include "formats/gguf.h"
#include "text/vocab.h"

namespace sg {

std::string QuantScheme::name() const {
  return q4_k_m ? "q4_k_m" : std::string(traits(base).name);
}

std::optional<QuantScheme> parse_quant_scheme(std::string_view s) {
  std::string l(s);
  for (auto& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (l == "q4_k_m") return QuantScheme{DType::Q4_K, true};
  const auto t = dtype_from_name(l);
  if (!t || *t == DType::Q8_K) return std::nullopt;
  return QuantScheme{*t, false};
}

namespace {

bool use_more_bits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

}  // namespace

DType llama_tensor_type(const QuantScheme& s, std::string_view name, int64_t layer,
                        int64_t n_layers, int64_t row_len) {
  if (ends_with(name, "_norm.weight")) return DType::F32;
  DType t = s.base;
  if (s.q4_k_m) {
    if (name == "output.weight") t = DType::Q6_K;
    else if ((ends_with(name, "attn_v.weight") || ends_with(name, "ffn_down.weight")) &&
             use_more_bits(layer, n_layers))
      t = DType::Q6_K;
  }
  if (row_len % traits(t).block_elems != 0) t = DType::Q8_0;
  if (row_len % traits(t).block_elems != 0) t = DType::F32;
  return t;
}

std::vector<TensorSpec> llama_tensor_specs(const LlamaConfig& c, const QuantScheme& s) {
  std::vector<TensorSpec> v;
  auto add = [&](std::string name, int64_t layer, std::vector<int64_t> dims) {
    const DType t = llama_tensor_type(s, name, layer, c.n_layers, dims[0]);
    v.push_back({std::move(name), std::move(dims), t});
  };
  add("token_embd.weight", -1, {c.dim, c.n_vocab});
  add("output_norm.weight", -1, {c.dim});
  add("output.weight", -1, {c.dim, c.n_vocab});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    add(p + "attn_norm.weight", i, {c.dim});
    add(p + "attn_q.weight", i, {c.dim, c.dim});
    add(p + "attn_k.weight", i, {c.dim, c.kv_dim()});
    add(p + "attn_v.weight", i, {c.dim, c.kv_dim()});
    add(p + "attn_output.weight", i, {c.dim, c.dim});
    add(p + "ffn_norm.weight", i, {c.dim});
    add(p + "ffn_gate.weight", i, {c.dim, c.ffn});
    add(p + "ffn_up.weight", i, {c.dim, c.ffn});
    add(p + "ffn_down.weight", i, {c.ffn, c.dim});
  }
  return v;
}

void write_llama_metadata(gguf::Writer& w, const LlamaConfig& c, const QuantScheme& s,
                          const std::string& name, const Vocab* vocab) {
  using gguf::Value;
  w.set("general.architecture", Value::str("llama"));
  w.set("general.name", Value::str(name));
  // llama.cpp's LLAMA_FTYPE numbers for the schemes we write.
  uint32_t ftype = 0;
  switch (s.base) {
    case DType::F32: ftype = 0; break;
    case DType::F16: ftype = 1; break;
    case DType::Q4_0: ftype = 2; break;
    case DType::Q8_0: ftype = 7; break;
    case DType::Q4_K: ftype = s.q4_k_m ? 15 : 14; break;
    case DType::Q6_K: ftype = 18; break;
    case DType::BF16: ftype = 32; break;
    default: break;
  }
  w.set("general.file_type", Value::u32(ftype));
  w.set("llama.context_length", Value::u32(static_cast<uint32_t>(c.n_ctx_train)));
  w.set("llama.embedding_length", Value::u32(static_cast<uint32_t>(c.dim)));
  w.set("llama.block_count", Value::u32(static_cast<uint32_t>(c.n_layers)));
  w.set("llama.feed_forward_length", Value::u32(static_cast<uint32_t>(c.ffn)));
  w.set("llama.rope.dimension_count", Value::u32(static_cast<uint32_t>(c.rope_dim)));
  w.set("llama.attention.head_count", Value::u32(static_cast<uint32_t>(c.n_heads)));
  w.set("llama.attention.head_count_kv", Value::u32(static_cast<uint32_t>(c.n_kv_heads)));
  w.set("llama.attention.layer_norm_rms_epsilon", Value::f32(c.rms_eps));
  w.set("llama.rope.freq_base", Value::f32(c.rope_theta));
  if (vocab) {
    if (static_cast<int64_t>(vocab->size()) != c.n_vocab)
      throw Error("tokenizer has " + std::to_string(vocab->size()) + " pieces but the model's vocabulary is " +
                  std::to_string(c.n_vocab));
    w.set("tokenizer.ggml.model", Value::str("llama"));
    w.set("tokenizer.ggml.tokens", Value::arr_str(vocab->pieces));
    w.set("tokenizer.ggml.scores", Value::arr_f32(vocab->scores));
    std::vector<int32_t> types(vocab->types.size());
    for (size_t i = 0; i < types.size(); ++i) types[i] = static_cast<int32_t>(vocab->types[i]);
    w.set("tokenizer.ggml.token_type", Value::arr_i32(types));
    w.set("tokenizer.ggml.bos_token_id", Value::u32(static_cast<uint32_t>(vocab->bos)));
    w.set("tokenizer.ggml.eos_token_id", Value::u32(static_cast<uint32_t>(vocab->eos)));
    w.set("tokenizer.ggml.unknown_token_id", Value::u32(static_cast<uint32_t>(vocab->unk)));
    w.set("tokenizer.ggml.add_bos_token", Value::boolean(vocab->add_bos));
    w.set("tokenizer.ggml.add_eos_token", Value::boolean(false));
    w.set("tokenizer.ggml.add_space_prefix", Value::boolean(vocab->add_space_prefix));
  }
}

void permute_qk_rows(const float* in, float* out, int64_t rows, int64_t cols, int64_t n_heads) {
  if (n_heads <= 0 || rows % (2 * n_heads) != 0)
    throw Error("cannot permute a q/k matrix of " + std::to_string(rows) + " rows for " +
                std::to_string(n_heads) + " heads");
  const int64_t hd = rows / n_heads, half = hd / 2;
  // HF row h·hd + j·half + i (j = 0: first half) → GGUF row h·hd + 2i + j.
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i)
        std::memcpy(out + (h * hd + 2 * i + j) * cols, in + (h * hd + j * half + i) * cols,
                    sizeof(float) * cols);
}

}  // namespace sg
