// SkinGPT-4 in libtorch for training: EVA ViT, ln_vision, BLIP-2 Q-Former,
// llama_proj and a Hugging Face-layout LLaMA, as a table of parameters with
// the ORIGINAL state-dict names (visual_encoder.blocks.0.attn.qkv.weight,
// Qformer.bert.encoder.layer.0.crossattention.self.key.weight, llama_proj.*,
// llm_model.model.layers.0.self_attn.q_proj.weight (rotate-half RoPE rows),
// llm_model.lm_head.weight, ...) and functional forwards with exactly the
// engine's math (src/model/vision.cpp, src/model/llama.cpp). The model exports
// straight to the project's GGUF files and imports them back.
//
// Parts can be absent: pretrain-vit builds the ViT + ln_vision + a temporary
// classification head (cls_head.*, never exported); pretrain-llm builds the
// LLaMA only; step1/step2 build everything but the head.
#pragma once
#include <ATen/ATen.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/llama.h"
#include "model/llama_file.h"
#include "model/vision.h"
#include "text/vocab.h"

namespace sg::train {

struct Parts {
  bool vit = false;      // visual_encoder.* and ln_vision.*
  bool qformer = false;  // query_tokens, Qformer.bert.*
  bool proj = false;     // llama_proj.*
  bool llm = false;      // llm_model.*
  int64_t head_classes = 0;  // cls_head.* (pretrain-vit only)
  bool full_vision() const { return vit && qformer && proj; }
};

struct ModelConfig {
  VisionConfig vision;  // vision.llm_dim is the projection width (== llm.dim when both exist)
  LlamaConfig llm;
  Parts parts;
};

// Throws sg::Error when sizes do not divide (heads, patches), the RoPE is
// partial (rope_dim != head_dim: Hugging Face's LLaMA has no such thing) or
// the projection width does not match the LLM.
void check_config(const ModelConfig& c);

class Net {
 public:
  explicit Net(const ModelConfig& c, at::Device device = at::kCPU);  // zero-filled parameters

  const ModelConfig& config() const { return cfg_; }
  at::Device device() const { return device_; }
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<at::Tensor>& tensors() const { return tensors_; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const at::Tensor& operator[](const std::string& name) const;
  int64_t numel() const;

  // Training initialisation from a seed (EVA / BERT / LLaMA conventions:
  // N(0, 0.02) matrices and tokens, zero biases, unit norms, EVA's rescaled
  // proj/fc2). perturbed: every tensor random and non-trivial (norms
  // 1 + 0.1·N, biases 0.1·N, matrices N(0,1)/√fan_in), for exactness tests.
  // only: when given, just the parameters it accepts are (re)initialised.
  void init(uint64_t seed, bool perturbed = false, const std::function<bool(const std::string&)>& only = {});

  // image [B, 3, S, S] normalised → ViT tokens after ln_vision [B, T, W] (fp32).
  at::Tensor vit(const at::Tensor& image) const;
  // ln_vision tokens → Q-Former queries [B, NQ, Q].
  at::Tensor qformer(const at::Tensor& image_tokens) const;
  // image → projected queries [B, NQ, D]: what the engine splices into the prompt.
  at::Tensor encode_image(const at::Tensor& image) const;
  // image → class logits of the temporary head on mean-pooled patch tokens.
  at::Tensor class_logits(const at::Tensor& image) const;

  at::Tensor embed(const at::Tensor& ids) const;         // [B, L] int64 → [B, L, dim]
  at::Tensor llm_hidden(const at::Tensor& embeds) const;  // causal, positions 0..L-1 → final-normed [B, L, dim]
  at::Tensor lm_head(const at::Tensor& hidden) const;     // → logits [..., n_vocab]

 private:
  at::Tensor p(const std::string& name) const { return (*this)[name]; }
  void add(const std::string& name, std::vector<int64_t> shape);
  at::Tensor attention_bert(const at::Tensor& hidden, const at::Tensor& kv, const std::string& prefix) const;

  ModelConfig cfg_;
  at::Device device_;
  std::vector<std::string> names_;
  std::vector<at::Tensor> tensors_;
  std::map<std::string, size_t> index_;
};

// Which part a parameter belongs to: "vit", "ln_vision", "qformer", "proj",
// "llm" or "head".
std::string param_group(const std::string& name);

}  // namespace sg::train
