#include "train/model.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>

#include "core/error.h"

namespace sg::train {

namespace {

const std::string kVit = "visual_encoder.";
const std::string kQf = "Qformer.bert.";
const std::string kLlm = "llm_model.";

std::string layer(const std::string& prefix, int64_t i) { return prefix + std::to_string(i) + "."; }

}  // namespace

void check_config(const ModelConfig& c) {
  const auto& v = c.vision;
  const auto& l = c.llm;
  auto positive = [](const char* what, int64_t x) {
    if (x < 1) throw Error(std::string("model config: ") + what + " must be >= 1");
  };
  if (c.parts.vit) {
    positive("image size", v.image_size);
    positive("patch size", v.patch_size);
    positive("ViT width", v.vit_width);
    positive("ViT depth", v.vit_depth);
    positive("ViT heads", v.vit_heads);
    positive("ViT MLP width", v.vit_ffn);
    if (v.image_size % v.patch_size) throw Error("model config: image size is not a multiple of the patch size");
    if (v.vit_width % v.vit_heads) throw Error("model config: ViT width is not a multiple of its head count");
  }
  if (c.parts.qformer) {
    positive("Q-Former width", v.qf_width);
    positive("Q-Former depth", v.qf_depth);
    positive("Q-Former heads", v.qf_heads);
    positive("Q-Former FFN width", v.qf_ffn);
    positive("query count", v.n_query);
    positive("cross-attention frequency", v.qf_cross_freq);
    if (v.qf_width % v.qf_heads) throw Error("model config: Q-Former width is not a multiple of its head count");
  }
  if (c.parts.llm) {
    positive("LLM vocabulary", l.n_vocab);
    positive("LLM width", l.dim);
    positive("LLM layers", l.n_layers);
    positive("LLM heads", l.n_heads);
    positive("LLM kv heads", l.n_kv_heads);
    positive("LLM FFN width", l.ffn);
    if (l.dim % l.n_heads || l.n_heads % l.n_kv_heads)
      throw Error("model config: LLM width, heads and kv heads do not divide");
    if (l.head_dim() % 2) throw Error("model config: LLM head size must be even (RoPE)");
    if (l.rope_dim != l.head_dim())
      throw Error("model config: partial RoPE (rope dimension " + std::to_string(l.rope_dim) + " != head size " +
                  std::to_string(l.head_dim()) + ") is not trainable here");
  }
  if (c.parts.proj) {
    positive("projection width", v.llm_dim);
    if (c.parts.llm && v.llm_dim != l.dim)
      throw Error("model config: the projection outputs " + std::to_string(v.llm_dim) + " but the LLM is " +
                  std::to_string(l.dim) + " wide");
  }
}

std::string param_group(const std::string& n) {
  if (n.rfind(kVit, 0) == 0) return "vit";
  if (n.rfind("ln_vision.", 0) == 0) return "ln_vision";
  if (n.rfind("Qformer.", 0) == 0 || n == "query_tokens") return "qformer";
  if (n.rfind("llama_proj.", 0) == 0) return "proj";
  if (n.rfind(kLlm, 0) == 0) return "llm";
  if (n.rfind("cls_head.", 0) == 0) return "head";
  return "";
}

Net::Net(const ModelConfig& c, at::Device device) : cfg_(c), device_(device) {
  check_config(c);
  const auto& v = c.vision;
  const int64_t W = v.vit_width, Q = v.qf_width;
  auto linear = [&](const std::string& n, int64_t in, int64_t out, bool bias = true) {
    add(n + ".weight", {out, in});
    if (bias) add(n + ".bias", {out});
  };
  auto norm = [&](const std::string& n, int64_t w) {
    add(n + ".weight", {w});
    add(n + ".bias", {w});
  };
  if (c.parts.vit) {
    add(kVit + "cls_token", {1, 1, W});
    add(kVit + "pos_embed", {1, v.n_tokens(), W});
    add(kVit + "patch_embed.proj.weight", {W, 3, v.patch_size, v.patch_size});
    add(kVit + "patch_embed.proj.bias", {W});
    for (int64_t i = 0; i < v.vit_depth; ++i) {
      const std::string b = layer(kVit + "blocks.", i);
      norm(b + "norm1", W);
      add(b + "attn.q_bias", {W});
      add(b + "attn.v_bias", {W});
      linear(b + "attn.qkv", W, 3 * W, false);
      linear(b + "attn.proj", W, W);
      norm(b + "norm2", W);
      linear(b + "mlp.fc1", W, v.vit_ffn);
      linear(b + "mlp.fc2", v.vit_ffn, W);
    }
    norm("ln_vision", W);
  }
  if (c.parts.qformer) {
    add("query_tokens", {1, v.n_query, Q});
    norm(kQf + "embeddings.LayerNorm", Q);
    for (int64_t i = 0; i < v.qf_depth; ++i) {
      const std::string L = layer(kQf + "encoder.layer.", i);
      linear(L + "attention.self.query", Q, Q);
      linear(L + "attention.self.key", Q, Q);
      linear(L + "attention.self.value", Q, Q);
      linear(L + "attention.output.dense", Q, Q);
      norm(L + "attention.output.LayerNorm", Q);
      if (v.has_cross(i)) {
        linear(L + "crossattention.self.query", Q, Q);
        linear(L + "crossattention.self.key", W, Q);
        linear(L + "crossattention.self.value", W, Q);
        linear(L + "crossattention.output.dense", Q, Q);
        norm(L + "crossattention.output.LayerNorm", Q);
      }
      linear(L + "intermediate_query.dense", Q, v.qf_ffn);
      linear(L + "output_query.dense", v.qf_ffn, Q);
      norm(L + "output_query.LayerNorm", Q);
    }
  }
  if (c.parts.proj) linear("llama_proj", Q, v.llm_dim);
  if (c.parts.llm) {
    const auto& l = c.llm;
    add(kLlm + "model.embed_tokens.weight", {l.n_vocab, l.dim});
    for (int64_t i = 0; i < l.n_layers; ++i) {
      const std::string L = layer(kLlm + "model.layers.", i);
      add(L + "input_layernorm.weight", {l.dim});
      linear(L + "self_attn.q_proj", l.dim, l.dim, false);
      linear(L + "self_attn.k_proj", l.dim, l.kv_dim(), false);
      linear(L + "self_attn.v_proj", l.dim, l.kv_dim(), false);
      linear(L + "self_attn.o_proj", l.dim, l.dim, false);
      add(L + "post_attention_layernorm.weight", {l.dim});
      linear(L + "mlp.gate_proj", l.dim, l.ffn, false);
      linear(L + "mlp.up_proj", l.dim, l.ffn, false);
      linear(L + "mlp.down_proj", l.ffn, l.dim, false);
    }
    add(kLlm + "model.norm.weight", {l.dim});
    add(kLlm + "lm_head.weight", {l.n_vocab, l.dim});
  }
  if (c.parts.head_classes > 0) {
    if (!c.parts.vit) throw Error("model config: a classification head needs the ViT");
    linear("cls_head", W, c.parts.head_classes);
  }
}

void Net::add(const std::string& name, std::vector<int64_t> shape) {
  index_[name] = tensors_.size();
  names_.push_back(name);
  tensors_.push_back(at::zeros(shape, at::TensorOptions().dtype(at::kFloat).device(device_)));
}

const at::Tensor& Net::operator[](const std::string& name) const {
  const auto it = index_.find(name);
  if (it == index_.end()) throw Error("the model has no parameter '" + name + "'");
  return tensors_[it->second];
}

int64_t Net::numel() const {
  int64_t n = 0;
  for (const auto& t : tensors_) n += t.numel();
  return n;
}

void Net::init(uint64_t seed, bool perturbed, const std::function<bool(const std::string&)>& only) {
  at::NoGradGuard ng;
  // One generator per tensor, seeded from (seed, index): adding a part never
  // changes another part's initial values.
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const std::string& n = names_[i];
    if (only && !only(n)) continue;
    at::Tensor t = tensors_[i];
    auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 1000003ull + i);
    at::Tensor r = at::empty(t.sizes(), at::kFloat).normal_(0.0, 1.0, gen);
    const bool is_norm = n.find("norm") != std::string::npos || n.find("LayerNorm") != std::string::npos ||
                         n.rfind("ln_vision.", 0) == 0;
    const bool is_bias = n.size() > 5 && n.compare(n.size() - 5, 5, ".bias") == 0;
    const bool q_or_v_bias = n.find("attn.q_bias") != std::string::npos || n.find("attn.v_bias") != std::string::npos;
    const bool is_table = n == "query_tokens" || n.find("cls_token") != std::string::npos ||
                          n.find("pos_embed") != std::string::npos || n.find("embed_tokens") != std::string::npos;
    const int64_t fan_in = t.dim() >= 2 ? t.numel() / t.size(0) : 1;
    at::Tensor v;
    if (perturbed) {
      if (is_norm && !is_bias) v = 1 + 0.1 * r;
      else if (is_bias || q_or_v_bias || t.dim() == 1) v = 0.1 * r;
      else if (n.find("embed_tokens") != std::string::npos || n == "query_tokens") v = r;
      else if (is_table) v = 0.5 * r;
      else v = r / std::sqrt(static_cast<double>(fan_in));
    } else {
      if (is_norm && !is_bias) v = at::ones_like(r);
      else if (is_bias || q_or_v_bias || t.dim() == 1) v = at::zeros_like(r);
      else if (n.rfind("llama_proj.", 0) == 0 || n.rfind("cls_head.", 0) == 0)
        v = r / std::sqrt(static_cast<double>(fan_in));  // keeps the output scale of the input
      else v = 0.02 * r;
      // EVA's fix_init_weight: proj and fc2 of block i divided by √(2(i+1)).
      if (n.rfind(kVit + "blocks.", 0) == 0 &&
          (n.find("attn.proj.weight") != std::string::npos || n.find("mlp.fc2.weight") != std::string::npos)) {
        const int64_t bi = std::stoll(n.substr(kVit.size() + 7));
        v = v / std::sqrt(2.0 * static_cast<double>(bi + 1));
      }
    }
    t.copy_(v);
  }
}

// ------------------------------------------------------------------ forward

at::Tensor Net::vit(const at::Tensor& image) const {
  const auto& c = cfg_.vision;
  if (!cfg_.parts.vit) throw Error("the model has no ViT");
  const int64_t B = image.size(0), W = c.vit_width, H = c.vit_heads, hd = W / H;
  at::Tensor x = at::conv2d(image, p(kVit + "patch_embed.proj.weight"), p(kVit + "patch_embed.proj.bias"),
                            {c.patch_size, c.patch_size});
  x = x.flatten(2).transpose(1, 2);  // [B, N, W]
  x = at::cat({p(kVit + "cls_token").expand({B, -1, -1}).to(x.scalar_type()), x}, 1) + p(kVit + "pos_embed");
  const int64_t T = x.size(1);
  // EVA: scale = head_dim ** -0.5 (a Python float), q = q * scale before q·kᵀ.
  const double scale = std::pow(static_cast<double>(hd), -0.5);
  for (int64_t i = 0; i < c.vit_depth; ++i) {
    const std::string b = layer(kVit + "blocks.", i);
    at::Tensor h = at::layer_norm(x, {W}, p(b + "norm1.weight"), p(b + "norm1.bias"), c.vit_eps);
    const at::Tensor vb = p(b + "attn.v_bias");
    const at::Tensor bias = at::cat({p(b + "attn.q_bias"), at::zeros_like(vb), vb});
    at::Tensor qkv = at::linear(h, p(b + "attn.qkv.weight"), bias).reshape({B, T, 3, H, hd}).permute({2, 0, 3, 1, 4});
    at::Tensor q = qkv[0] * scale, k = qkv[1], v = qkv[2];
    at::Tensor a = at::matmul(q, k.transpose(-2, -1)).softmax(-1);
    h = at::matmul(a, v).transpose(1, 2).reshape({B, T, W});
    x = x + at::linear(h, p(b + "attn.proj.weight"), p(b + "attn.proj.bias"));
    h = at::layer_norm(x, {W}, p(b + "norm2.weight"), p(b + "norm2.bias"), c.vit_eps);
    h = at::gelu(at::linear(h, p(b + "mlp.fc1.weight"), p(b + "mlp.fc1.bias")));
    x = x + at::linear(h, p(b + "mlp.fc2.weight"), p(b + "mlp.fc2.bias"));
  }
  // MiniGPT-4's ln_vision is computed in fp32.
  return at::layer_norm(x.to(at::kFloat), {W}, p("ln_vision.weight"), p("ln_vision.bias"), c.ln_vision_eps);
}

// BERT self/cross attention: softmax(q·kᵀ / √hd)·v, heads concatenated.
at::Tensor Net::attention_bert(const at::Tensor& hidden, const at::Tensor& kv, const std::string& pre) const {
  const auto& c = cfg_.vision;
  const int64_t B = hidden.size(0), NQ = hidden.size(1), NK = kv.size(1), Q = c.qf_width, H = c.qf_heads,
                hd = Q / H;
  auto heads = [&](const at::Tensor& t, int64_t n) { return t.reshape({B, n, H, hd}).permute({0, 2, 1, 3}); };
  at::Tensor q = heads(at::linear(hidden, p(pre + "query.weight"), p(pre + "query.bias")), NQ);
  at::Tensor k = heads(at::linear(kv, p(pre + "key.weight"), p(pre + "key.bias")), NK);
  at::Tensor v = heads(at::linear(kv, p(pre + "value.weight"), p(pre + "value.bias")), NK);
  at::Tensor s = at::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(hd));
  at::Tensor ctx = at::matmul(s.softmax(-1), v);
  return ctx.permute({0, 2, 1, 3}).reshape({B, NQ, Q});
}

at::Tensor Net::qformer(const at::Tensor& img) const {
  const auto& c = cfg_.vision;
  if (!cfg_.parts.qformer) throw Error("the model has no Q-Former");
  const int64_t B = img.size(0), Q = c.qf_width;
  auto ln = [&](const at::Tensor& x, const std::string& n) {
    return at::layer_norm(x, {Q}, p(n + ".weight"), p(n + ".bias"), c.qf_eps);
  };
  at::Tensor x = ln(p("query_tokens").expand({B, -1, -1}), kQf + "embeddings.LayerNorm");
  for (int64_t i = 0; i < c.qf_depth; ++i) {
    const std::string L = layer(kQf + "encoder.layer.", i);
    at::Tensor ctx = attention_bert(x, x, L + "attention.self.");
    x = ln(at::linear(ctx, p(L + "attention.output.dense.weight"), p(L + "attention.output.dense.bias")) + x,
           L + "attention.output.LayerNorm");
    if (c.has_cross(i)) {
      ctx = attention_bert(x, img, L + "crossattention.self.");
      x = ln(at::linear(ctx, p(L + "crossattention.output.dense.weight"), p(L + "crossattention.output.dense.bias")) +
                 x,
             L + "crossattention.output.LayerNorm");
    }
    at::Tensor f = at::gelu(at::linear(x, p(L + "intermediate_query.dense.weight"), p(L + "intermediate_query.dense.bias")));
    x = ln(at::linear(f, p(L + "output_query.dense.weight"), p(L + "output_query.dense.bias")) + x,
           L + "output_query.LayerNorm");
  }
  return x;
}

at::Tensor Net::encode_image(const at::Tensor& image) const {
  if (!cfg_.parts.proj) throw Error("the model has no projection");
  return at::linear(qformer(vit(image)), p("llama_proj.weight"), p("llama_proj.bias"));
}

at::Tensor Net::class_logits(const at::Tensor& image) const {
  if (cfg_.parts.head_classes <= 0) throw Error("the model has no classification head");
  const at::Tensor tokens = vit(image);
  const at::Tensor pooled = tokens.slice(1, 1).mean(1);  // patch tokens, CLS left out
  return at::linear(pooled, p("cls_head.weight"), p("cls_head.bias"));
}

at::Tensor Net::embed(const at::Tensor& ids) const {
  return at::embedding(p(kLlm + "model.embed_tokens.weight"), ids);
}

namespace {
// Hugging Face LlamaRMSNorm (4.28): the variance in fp32, weight · x̂.
at::Tensor rmsnorm(const at::Tensor& x, const at::Tensor& w, double eps) {
  const at::Tensor var = x.to(at::kFloat).pow(2).mean(-1, true);
  return w * (x * at::rsqrt(var + eps));
}
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.slice(-1, h), x.slice(-1, 0, h)}, -1);
}
}  // namespace

at::Tensor Net::llm_hidden(const at::Tensor& embeds) const {
  const auto& c = cfg_.llm;
  if (!cfg_.parts.llm) throw Error("the model has no LLM");
  const int64_t B = embeds.size(0), L = embeds.size(1), H = c.n_heads, KV = c.n_kv_heads, hd = c.head_dim();
  const auto fopt = at::TensorOptions().dtype(at::kFloat).device(device_);
  // Rotary tables as transformers computes them: fp32 inv_freq, t ⊗ inv_freq, cat(f, f).
  const at::Tensor inv_freq =
      1.0 / at::pow(static_cast<double>(c.rope_theta), at::arange(0, hd, 2, fopt.dtype(at::kLong)).to(fopt) / hd);
  const at::Tensor freqs = at::outer(at::arange(L, fopt), inv_freq);
  const at::Tensor emb = at::cat({freqs, freqs}, -1);
  const at::Tensor cos = emb.cos(), sin = emb.sin();  // [L, hd]
  const at::Tensor mask = at::full({L, L}, -std::numeric_limits<float>::infinity(), fopt).triu(1);
  const double norm = std::sqrt(static_cast<double>(hd));
  at::Tensor x = embeds;
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string P = layer(kLlm + "model.layers.", i);
    at::Tensor h = rmsnorm(x, p(P + "input_layernorm.weight"), c.rms_eps);
    at::Tensor q = at::linear(h, p(P + "self_attn.q_proj.weight")).view({B, L, H, hd}).transpose(1, 2);
    at::Tensor k = at::linear(h, p(P + "self_attn.k_proj.weight")).view({B, L, KV, hd}).transpose(1, 2);
    at::Tensor v = at::linear(h, p(P + "self_attn.v_proj.weight")).view({B, L, KV, hd}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    if (KV != H) {  // grouped-query attention: head h reads kv head h / (H / KV)
      k = k.repeat_interleave(H / KV, 1);
      v = v.repeat_interleave(H / KV, 1);
    }
    at::Tensor s = at::matmul(q, k.transpose(2, 3)) / norm + mask;
    s = s.to(at::kFloat).softmax(-1).to(q.scalar_type());
    at::Tensor o = at::matmul(s, v).transpose(1, 2).reshape({B, L, c.dim});
    x = x + at::linear(o, p(P + "self_attn.o_proj.weight"));
    h = rmsnorm(x, p(P + "post_attention_layernorm.weight"), c.rms_eps);
    at::Tensor f = at::silu(at::linear(h, p(P + "mlp.gate_proj.weight"))) * at::linear(h, p(P + "mlp.up_proj.weight"));
    x = x + at::linear(f, p(P + "mlp.down_proj.weight"));
  }
  return rmsnorm(x, p(kLlm + "model.norm.weight"), c.rms_eps);
}

at::Tensor Net::lm_head(const at::Tensor& hidden) const { return at::linear(hidden, p(kLlm + "lm_head.weight")); }

}  // namespace sg::train
