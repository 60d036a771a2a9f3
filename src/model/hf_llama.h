// A Hugging Face LLaMA folder as users download it: config.json, the weights
// as model.safetensors, a sharded model.safetensors.index.json, pytorch_model.bin
// or a sharded pytorch_model.bin.index.json (looked for in that order, as
// transformers prefers safetensors), and usually tokenizer.model.
#pragma once
#include <string>

#include "formats/tensor_source.h"
#include "model/llama.h"

namespace sg {

struct HfLlama {
  std::string dir;
  std::string weights;         // which file or index was picked, relative to dir
  std::string tokenizer;       // dir/tokenizer.model if present, else empty
  LlamaConfig config;
  bool tie_word_embeddings = false;
  TensorSet tensors;
};

// Reads config.json: model_type llama, hidden_size, num_hidden_layers,
// num_attention_heads, num_key_value_heads (default: heads), intermediate_size,
// rms_norm_eps (default 1e-6), vocab_size, rope_theta (default 10000),
// max_position_embeddings (default 2048). Refuses rope_scaling.
LlamaConfig read_hf_llama_config(const std::string& config_json, bool* tie_word_embeddings = nullptr);

// Throws sg::Error naming the folder when config.json or the weights are missing.
HfLlama open_hf_llama(const std::string& dir);

// Hugging Face name of a llama GGUF tensor ("blk.3.attn_q.weight" →
// "model.layers.3.self_attn.q_proj.weight"); empty if there is none.
std::string hf_llama_source_name(const std::string& gguf_name);

}  // namespace sg
