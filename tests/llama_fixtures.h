// Builds llama GGUF files for tests: from the reference's raw parameters
// (Hugging Face layout, so Q/K are permuted), or from seeded random weights.
#pragma once
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "core/quant.h"
#include "formats/gguf.h"
#include "model/llama_file.h"
#include "text/vocab.h"
#include "test_util.h"

namespace sg::test {

// The tiny LLaMA of ../shared/reference/minigpt4-tiny (manifest.json "llama").
inline LlamaConfig ref_llama_config() {
  LlamaConfig c;
  c.n_vocab = 100; c.dim = 64; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 4;
  c.ffn = 128; c.n_ctx_train = 2048; c.rope_dim = 16; c.rms_eps = 1e-6f; c.rope_theta = 10000.0f;
  return c;
}

// Writes a llama GGUF whose tensors come from `source(gguf_name)` as f32 in
// GGUF row order, quantized per the scheme.
inline void write_llama(const std::string& path, const LlamaConfig& c, const QuantScheme& s,
                        const std::function<std::vector<float>(const std::string&)>& source,
                        const Vocab* vocab = nullptr) {
  gguf::Writer w(path);
  write_llama_metadata(w, c, s, "test", vocab);
  const auto specs = llama_tensor_specs(c, s);
  for (const auto& t : specs) w.add_tensor(t.name, t.type, t.dims);
  w.begin();
  for (const auto& t : specs) {
    std::vector<float> f = source(t.name);
    const int64_t row = t.dims[0], rows = static_cast<int64_t>(f.size()) / row;
    std::vector<uint8_t> q(row_bytes(t.type, row) * rows);
    for (int64_t r = 0; r < rows; ++r)
      quantize_row(t.type, f.data() + r * row, q.data() + r * row_bytes(t.type, row), row);
    w.write_tensor_data(q.data(), q.size());
  }
  w.finish();
}

// GGUF name → Hugging Face parameter file of the reference.
inline std::vector<float> ref_llama_tensor(const std::string& name, const LlamaConfig& c) {
  const auto p = ref_dir() / "params";
  auto hf = [&](const std::string& n) { return read_f32(p / ("llm_model." + n + ".bin")); };
  if (name == "token_embd.weight") return hf("model.embed_tokens.weight");
  if (name == "output_norm.weight") return hf("model.norm.weight");
  if (name == "output.weight") return hf("lm_head.weight");
  const size_t dot = name.find('.', 4);
  const std::string layer = name.substr(4, dot - 4), rest = name.substr(dot + 1);
  const std::string L = "model.layers." + layer + ".";
  static const std::map<std::string, std::string> names = {
      {"attn_norm.weight", "input_layernorm.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},   {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},   {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},    {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  std::vector<float> w = hf(L + names.at(rest));
  if (rest == "attn_q.weight" || rest == "attn_k.weight") {
    std::vector<float> out(w.size());
    const int64_t heads = rest == "attn_q.weight" ? c.n_heads : c.n_kv_heads;
    permute_qk_rows(w.data(), out.data(), static_cast<int64_t>(w.size()) / c.dim, c.dim, heads);
    return out;
  }
  return w;
}

// Seeded random weights shaped like the reference's init: N(0,1)/sqrt(fan_in)
// for matrices, 1 + 0.1·N(0,1) for norms, N(0,1) for the embedding table.
inline std::function<std::vector<float>(const std::string&)> random_llama_source(const LlamaConfig& c,
                                                                                 uint32_t seed) {
  auto specs = llama_tensor_specs(c, QuantScheme{});
  return [c, seed, specs](const std::string& name) {
    for (size_t i = 0; i < specs.size(); ++i) {
      if (specs[i].name != name) continue;
      std::mt19937 rng(seed + static_cast<uint32_t>(i));
      std::normal_distribution<float> n(0, 1);
      int64_t count = 1;
      for (auto d : specs[i].dims) count *= d;
      std::vector<float> v(count);
      const bool norm = specs[i].dims.size() == 1, embd = name == "token_embd.weight";
      const float scale = 1.0f / std::sqrt(static_cast<float>(specs[i].dims[0]));
      for (auto& x : v) x = norm ? 1 + 0.1f * n(rng) : embd ? n(rng) : n(rng) * scale;
      return v;
    }
    throw std::runtime_error("no tensor " + name);
  };
}

}  // namespace sg::test
