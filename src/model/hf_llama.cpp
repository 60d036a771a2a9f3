#include "model/hf_llama.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "formats/safetensors.h"

namespace sg {

namespace fs = std::filesystem;

LlamaConfig read_hf_llama_config(const std::string& path, bool* tied) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open (a Hugging Face model folder has a config.json)");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  if (text.size() > (16u << 20)) throw Error(path + ": implausibly large for a config.json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(path + ": not a JSON object");
  if (j.contains("model_type") && j["model_type"] != "llama")
    throw Error(path + ": model_type is " + j["model_type"].dump() + "; only LLaMA-family models (\"llama\") are supported");
  auto integer = [&](const char* key, int64_t lo, int64_t hi, std::optional<int64_t> def) -> int64_t {
    if (!j.contains(key) || j[key].is_null()) {
      if (def) return *def;
      throw Error(path + ": missing \"" + key + "\"");
    }
    if (!j[key].is_number_integer()) throw Error(path + ": \"" + key + "\" is not an integer");
    const int64_t v = j[key].get<int64_t>();
    if (v < lo || v > hi)
      throw Error(path + ": \"" + key + "\" = " + std::to_string(v) + " is out of range [" + std::to_string(lo) + ", " +
                  std::to_string(hi) + "]");
    return v;
  };
  auto number = [&](const char* key, double lo, double hi, double def) -> double {
    if (!j.contains(key) || j[key].is_null()) return def;
    if (!j[key].is_number()) throw Error(path + ": \"" + key + "\" is not a number");
    const double v = j[key].get<double>();
    if (!(v > lo && v < hi)) throw Error(path + ": \"" + key + "\" = " + std::to_string(v) + " is out of range");
    return v;
  };
  if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
    throw Error(path + ": rope_scaling " + j["rope_scaling"].dump() + " is not supported");
  LlamaConfig c;
  c.dim = integer("hidden_size", 2, 1 << 16, std::nullopt);
  c.n_layers = integer("num_hidden_layers", 1, 1024, std::nullopt);
  c.n_heads = integer("num_attention_heads", 1, 1024, std::nullopt);
  c.n_kv_heads = integer("num_key_value_heads", 1, c.n_heads, c.n_heads);
  c.ffn = integer("intermediate_size", 1, 1 << 20, std::nullopt);
  c.n_vocab = integer("vocab_size", 1, 1 << 22, std::nullopt);
  c.n_ctx_train = integer("max_position_embeddings", 1, 1 << 24, 2048);
  c.rms_eps = static_cast<float>(number("rms_norm_eps", 0, 1, 1e-6));
  c.rope_theta = static_cast<float>(number("rope_theta", 1, 1e12, 10000.0));
  if (c.dim % c.n_heads || c.n_heads % c.n_kv_heads || (c.dim / c.n_heads) % 2)
    throw Error(path + ": hidden_size " + std::to_string(c.dim) + " and head counts " + std::to_string(c.n_heads) +
                "/" + std::to_string(c.n_kv_heads) + " do not divide into even head sizes");
  c.rope_dim = c.dim / c.n_heads;
  if (tied) *tied = j.contains("tie_word_embeddings") && j["tie_word_embeddings"].is_boolean() &&
                    j["tie_word_embeddings"].get<bool>();
  return c;
}

HfLlama open_hf_llama(const std::string& dir) {
  if (!fs::is_directory(dir)) throw Error(dir + ": not a folder (--llm takes a Hugging Face folder or a .gguf file)");
  HfLlama h;
  h.dir = dir;
  h.config = read_hf_llama_config((fs::path(dir) / "config.json").string(), &h.tie_word_embeddings);
  const fs::path d(dir);
  // transformers' preference: safetensors before pickles, a single file before an index.
  for (const char* name : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                           "pytorch_model.bin.index.json"}) {
    if (!fs::exists(d / name)) continue;
    h.weights = name;
    const std::string p = (d / name).string();
    if (std::string(name).ends_with(".index.json")) h.tensors = open_sharded(p);
    else h.tensors = open_tensor_file(p, true);
    break;
  }
  if (h.weights.empty())
    throw Error(dir + ": no weights found (looked for model.safetensors, model.safetensors.index.json, "
                "pytorch_model.bin, pytorch_model.bin.index.json)");
  if (fs::exists(d / "tokenizer.model")) h.tokenizer = (d / "tokenizer.model").string();
  return h;
}

std::string hf_llama_source_name(const std::string& n) {
  if (n == "token_embd.weight") return "model.embed_tokens.weight";
  if (n == "output_norm.weight") return "model.norm.weight";
  if (n == "output.weight") return "lm_head.weight";
  if (n.rfind("blk.", 0) != 0) return "";
  const size_t dot = n.find('.', 4);
  if (dot == std::string::npos) return "";
  static const std::map<std::string, std::string> parts = {
      {"attn_norm.weight", "input_layernorm.weight"},   {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},     {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},     {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},      {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  const auto it = parts.find(n.substr(dot + 1));
  if (it == parts.end()) return "";
  return "model.layers." + n.substr(4, dot - 4) + "." + it->second;
}

}  // namespace sg
