#include "model/vision_file.h"

#include <map>

#include "core/error.h"
#include "formats/gguf.h"

namespace sg {

namespace {

const std::string A = std::string(kVisionArch) + ".";

DType matrix_type(DType t, int64_t row_len) {
  if (row_len % traits(t).block_elems != 0) t = DType::Q8_0;
  if (row_len % traits(t).block_elems != 0) t = DType::F32;
  return t;
}

}  // namespace

std::vector<TensorSpec> vision_tensor_specs(const VisionConfig& c, DType wt) {
  std::vector<TensorSpec> v;
  auto vec = [&](std::string n, std::vector<int64_t> dims) { v.push_back({std::move(n), std::move(dims), DType::F32}); };
  auto mat = [&](std::string n, int64_t cols, int64_t rows) {
    v.push_back({std::move(n), {cols, rows}, matrix_type(wt, cols)});
  };
  auto linear = [&](const std::string& n, int64_t in, int64_t out) {
    mat(n + ".weight", in, out);
    vec(n + ".bias", {out});
  };
  auto norm = [&](const std::string& n, int64_t w) {
    vec(n + ".weight", {w});
    vec(n + ".bias", {w});
  };
  const int64_t W = c.vit_width, Q = c.qf_width;
  vec("v.cls_token", {W});
  vec("v.pos_embed", {W, c.n_tokens()});
  linear("v.patch_embd", 3 * c.patch_size * c.patch_size, W);
  for (int64_t i = 0; i < c.vit_depth; ++i) {
    const std::string p = "v.blk." + std::to_string(i) + ".";
    norm(p + "norm1", W);
    mat(p + "attn_qkv.weight", W, 3 * W);
    vec(p + "attn_q_bias", {W});
    vec(p + "attn_v_bias", {W});
    linear(p + "attn_out", W, W);
    norm(p + "norm2", W);
    linear(p + "ffn_up", W, c.vit_ffn);
    linear(p + "ffn_down", c.vit_ffn, W);
  }
  norm("ln_vision", W);
  vec("qf.query_tokens", {Q, c.n_query});
  norm("qf.embd_norm", Q);
  for (int64_t i = 0; i < c.qf_depth; ++i) {
    const std::string p = "qf.blk." + std::to_string(i) + ".";
    linear(p + "self_q", Q, Q);
    linear(p + "self_k", Q, Q);
    linear(p + "self_v", Q, Q);
    linear(p + "self_out", Q, Q);
    norm(p + "self_norm", Q);
    if (c.has_cross(i)) {
      linear(p + "cross_q", Q, Q);
      linear(p + "cross_k", W, Q);
      linear(p + "cross_v", W, Q);
      linear(p + "cross_out", Q, Q);
      norm(p + "cross_norm", Q);
    }
    linear(p + "ffn_up", Q, c.qf_ffn);
    linear(p + "ffn_down", c.qf_ffn, Q);
    norm(p + "ffn_norm", Q);
  }
  linear("proj", Q, c.llm_dim);
  return v;
}

void write_vision_metadata(gguf::Writer& w, const VisionConfig& c, const std::string& name) {
  using gguf::Value;
  auto u = [&](const std::string& k, int64_t x) { w.set(A + k, Value::u32(static_cast<uint32_t>(x))); };
  auto f = [&](const std::string& k, float x) { w.set(A + k, Value::f32(x)); };
  w.set("general.architecture", Value::str(kVisionArch));
  w.set("general.name", Value::str(name));
  u("image_size", c.image_size);
  u("patch_size", c.patch_size);
  w.set(A + "image_mean", Value::arr_f32({c.mean[0], c.mean[1], c.mean[2]}));
  w.set(A + "image_std", Value::arr_f32({c.std[0], c.std[1], c.std[2]}));
  u("vit.embedding_length", c.vit_width);
  u("vit.block_count", c.vit_depth);
  u("vit.head_count", c.vit_heads);
  u("vit.feed_forward_length", c.vit_ffn);
  f("vit.layer_norm_epsilon", c.vit_eps);
  f("ln_vision.layer_norm_epsilon", c.ln_vision_eps);
  u("qformer.embedding_length", c.qf_width);
  u("qformer.block_count", c.qf_depth);
  u("qformer.head_count", c.qf_heads);
  u("qformer.feed_forward_length", c.qf_ffn);
  f("qformer.layer_norm_epsilon", c.qf_eps);
  u("qformer.cross_attention_freq", c.qf_cross_freq);
  u("qformer.query_count", c.n_query);
  u("projection_length", c.llm_dim);
}

VisionConfig read_vision_config(const gguf::File& f) {
  const std::string arch = f.require_string("general.architecture");
  if (arch != kVisionArch)
    throw Error(f.path() + ": general.architecture is '" + arch + "', expected '" + kVisionArch + "'");
  VisionConfig c;
  auto u = [&](const std::string& k, int64_t lo, int64_t hi) {
    const uint64_t v = f.require_uint(A + k);
    if (v < static_cast<uint64_t>(lo) || v > static_cast<uint64_t>(hi))
      throw Error(f.path() + ": metadata '" + A + k + "' = " + std::to_string(v) + " is out of range [" +
                  std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return static_cast<int64_t>(v);
  };
  auto fl = [&](const std::string& k) {
    const double v = f.require_float(A + k);
    if (!(v > 0 && v < 1)) throw Error(f.path() + ": metadata '" + A + k + "' must be in (0, 1)");
    return static_cast<float>(v);
  };
  c.image_size = u("image_size", 1, 4096);
  c.patch_size = u("patch_size", 1, c.image_size);
  if (c.image_size % c.patch_size) throw Error(f.path() + ": image_size is not a multiple of patch_size");
  c.vit_width = u("vit.embedding_length", 1, 1 << 15);
  c.vit_depth = u("vit.block_count", 1, 256);
  c.vit_heads = u("vit.head_count", 1, c.vit_width);
  c.vit_ffn = u("vit.feed_forward_length", 1, 1 << 17);
  c.vit_eps = fl("vit.layer_norm_epsilon");
  c.ln_vision_eps = fl("ln_vision.layer_norm_epsilon");
  c.qf_width = u("qformer.embedding_length", 1, 1 << 15);
  c.qf_depth = u("qformer.block_count", 1, 256);
  c.qf_heads = u("qformer.head_count", 1, c.qf_width);
  c.qf_ffn = u("qformer.feed_forward_length", 1, 1 << 17);
  c.qf_eps = fl("qformer.layer_norm_epsilon");
  c.qf_cross_freq = u("qformer.cross_attention_freq", 1, 256);
  c.n_query = u("qformer.query_count", 1, 4096);
  c.llm_dim = u("projection_length", 1, 1 << 16);
  if (c.vit_width % c.vit_heads || c.qf_width % c.qf_heads)
    throw Error(f.path() + ": embedding width is not a multiple of the head count");
  for (const char* k : {"image_mean", "image_std"}) {
    const auto* v = f.find(A + k);
    const auto* arr = v ? std::get_if<std::vector<double>>(&v->v) : nullptr;
    if (!arr || arr->size() != 3) throw Error(f.path() + ": metadata '" + A + k + "' must be 3 floats");
    for (int i = 0; i < 3; ++i) {
      if (std::string(k) == "image_std" && !((*arr)[i] > 0)) throw Error(f.path() + ": image_std must be > 0");
      (std::string(k) == "image_mean" ? c.mean : c.std)[i] = static_cast<float>((*arr)[i]);
    }
  }
  return c;
}

std::string vision_source_name(const std::string& n) {
  static const std::map<std::string, std::string> fixed = {
      {"v.cls_token", "visual_encoder.cls_token"},
      {"v.pos_embed", "visual_encoder.pos_embed"},
      {"v.patch_embd.weight", "visual_encoder.patch_embed.proj.weight"},
      {"v.patch_embd.bias", "visual_encoder.patch_embed.proj.bias"},
      {"ln_vision.weight", "ln_vision.weight"},
      {"ln_vision.bias", "ln_vision.bias"},
      {"qf.query_tokens", "query_tokens"},
      {"qf.embd_norm.weight", "Qformer.bert.embeddings.LayerNorm.weight"},
      {"qf.embd_norm.bias", "Qformer.bert.embeddings.LayerNorm.bias"},
      {"proj.weight", "llama_proj.weight"},
      {"proj.bias", "llama_proj.bias"},
  };
  if (auto it = fixed.find(n); it != fixed.end()) return it->second;
  static const std::map<std::string, std::string> vit = {
      {"norm1", "norm1"}, {"attn_qkv", "attn.qkv"}, {"attn_q_bias", "attn.q_bias"},
      {"attn_v_bias", "attn.v_bias"}, {"attn_out", "attn.proj"}, {"norm2", "norm2"},
      {"ffn_up", "mlp.fc1"}, {"ffn_down", "mlp.fc2"}};
  static const std::map<std::string, std::string> qf = {
      {"self_q", "attention.self.query"}, {"self_k", "attention.self.key"},
      {"self_v", "attention.self.value"}, {"self_out", "attention.output.dense"},
      {"self_norm", "attention.output.LayerNorm"}, {"cross_q", "crossattention.self.query"},
      {"cross_k", "crossattention.self.key"}, {"cross_v", "crossattention.self.value"},
      {"cross_out", "crossattention.output.dense"}, {"cross_norm", "crossattention.output.LayerNorm"},
      {"ffn_up", "intermediate_query.dense"}, {"ffn_down", "output_query.dense"},
      {"ffn_norm", "output_query.LayerNorm"}};
  // "<prefix>blk.<i>.<part>[.weight|.bias]"
  auto split = [&](const std::string& prefix, const std::map<std::string, std::string>& table,
                   const std::string& out_prefix) -> std::string {
    if (n.rfind(prefix, 0) != 0) return "";
    const size_t d1 = n.find('.', prefix.size());
    if (d1 == std::string::npos) return "";
    const std::string idx = n.substr(prefix.size(), d1 - prefix.size());
    std::string part = n.substr(d1 + 1), suffix;
    if (const size_t d2 = part.find('.'); d2 != std::string::npos) {
      suffix = part.substr(d2);
      part = part.substr(0, d2);
    }
    const auto it = table.find(part);
    if (it == table.end()) return "";
    return out_prefix + idx + "." + it->second + suffix;
  };
  if (auto s = split("v.blk.", vit, "visual_encoder.blocks."); !s.empty()) return s;
  if (auto s = split("qf.blk.", qf, "Qformer.bert.encoder.layer."); !s.empty()) return s;
  throw Error("no checkpoint name is known for vision tensor '" + n + "'");
}

double VisionConfig::flops() const {
  const double T = static_cast<double>(n_tokens()), W = vit_width, Q = qf_width, NQ = n_query;
  double vit = T * (3.0 * patch_size * patch_size) * W;                      // patch embedding
  vit += vit_depth * (T * W * 3 * W + 2 * T * T * W + T * W * W + 2 * T * W * vit_ffn);
  double qf = 0;
  for (int64_t i = 0; i < qf_depth; ++i) {
    qf += NQ * Q * Q * 4 + 2 * NQ * NQ * Q + 2 * NQ * Q * qf_ffn;
    if (has_cross(i)) qf += NQ * Q * Q * 2 + 2 * T * W * Q + 2 * NQ * T * Q;
  }
  return 2.0 * (vit + qf + NQ * Q * llm_dim);
}

}  // namespace sg
