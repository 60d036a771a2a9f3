// A tiny random-weight model folder for end-to-end tests of the consultation
// and the server: llm.gguf with the real Llama-2 tokenizer (64 wide, 2
// layers) and a 224-px vision model (one ViT block, patch 32, 4 queries).
// Its words are noise; the pipeline is real.
#pragma once
#include <filesystem>

#include "model/synth.h"
#include "test_util.h"
#include "text/vocab.h"

namespace sg::test {

inline void write_tiny_model(const std::filesystem::path& dir) {
  const Vocab v = load_vocab((shared_dir() / "tokenizer/tokenizer.model").string());
  LlamaConfig c;
  c.n_vocab = static_cast<int64_t>(v.size());
  c.dim = 64; c.n_layers = 2; c.n_heads = 4; c.n_kv_heads = 4; c.ffn = 128; c.n_ctx_train = 2048; c.rope_dim = 16;
  c.rms_eps = 1e-6f;
  synth_llama((dir / "llm.gguf").string(), c, QuantScheme{}, &v, 11);
  VisionConfig vc;
  vc.image_size = 224; vc.patch_size = 32;
  vc.vit_width = 32; vc.vit_depth = 1; vc.vit_heads = 2; vc.vit_ffn = 64;
  vc.qf_width = 32; vc.qf_depth = 2; vc.qf_heads = 2; vc.qf_ffn = 64; vc.qf_cross_freq = 2; vc.n_query = 4;
  vc.llm_dim = 64;
  synth_vision((dir / "vision.gguf").string(), vc, DType::F32, 5);
}

}  // namespace sg::test
