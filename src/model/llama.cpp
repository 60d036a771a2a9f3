#include "model/llama.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/ops.h"
#include "core/quant.h"
#include "core/threads.h"
#include "formats/gguf.h"

namespace sg {

namespace {

// A weight matrix [rows × cols] (GGUF dims {cols, rows}).
WeightView matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols) {
  const auto& t = f.require_tensor(name);
  if (t.dims.size() != 2 || t.dims[0] != cols || t.dims[1] != rows)
    throw Error(f.path() + ": tensor '" + name + "' has shape " + [&] {
      std::string s = "[";
      for (size_t i = 0; i < t.dims.size(); ++i) s += (i ? ", " : "") + std::to_string(t.dims[i]);
      return s + "]";
    }() + ", expected [" + std::to_string(cols) + ", " + std::to_string(rows) + "]");
  if (t.type == DType::Q8_K) throw Error(f.path() + ": tensor '" + name + "' has activation-only type q8_k");
  return WeightView{t.type, f.tensor_data(t), rows, cols};
}

std::vector<float> vector_f32(const gguf::File& f, const std::string& name, int64_t n) {
  const auto& t = f.require_tensor(name);
  if (t.n_elements() != n)
    throw Error(f.path() + ": tensor '" + name + "' has " + std::to_string(t.n_elements()) +
                " elements, expected " + std::to_string(n));
  std::vector<float> v(n);
  dequantize_row(t.type, f.tensor_data(t), v.data(), n);
  return v;
}

int64_t meta_int(const gguf::File& f, const std::string& key, int64_t lo, int64_t hi) {
  const uint64_t v = f.require_uint(key);
  if (v < static_cast<uint64_t>(lo) || v > static_cast<uint64_t>(hi))
    throw Error(f.path() + ": metadata '" + key + "' = " + std::to_string(v) + " is out of range [" +
                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return static_cast<int64_t>(v);
}

}  // namespace

LlamaModel::~LlamaModel() = default;

std::unique_ptr<LlamaModel> LlamaModel::load(const std::string& path, gguf::Residency residency) {
  std::unique_ptr<LlamaModel> m(new LlamaModel());
  m->file_ = gguf::File::open(path, residency);
  const gguf::File& f = *m->file_;
  const std::string arch = f.require_string("general.architecture");
  if (arch != "llama")
    throw Error(path + ": general.architecture is '" + arch + "', expected 'llama'");
  LlamaConfig& c = m->cfg_;
  c.dim = meta_int(f, "llama.embedding_length", 1, 1 << 16);
  c.n_layers = meta_int(f, "llama.block_count", 1, 1024);
  c.n_heads = meta_int(f, "llama.attention.head_count", 1, 1024);
  c.n_kv_heads = f.find("llama.attention.head_count_kv")
                     ? meta_int(f, "llama.attention.head_count_kv", 1, c.n_heads)
                     : c.n_heads;
  c.ffn = meta_int(f, "llama.feed_forward_length", 1, 1 << 20);
  c.n_ctx_train = f.find("llama.context_length") ? meta_int(f, "llama.context_length", 1, 1 << 24) : 2048;
  if (c.dim % c.n_heads || c.n_heads % c.n_kv_heads)
    throw Error(path + ": embedding_length " + std::to_string(c.dim) + " and head counts " +
                std::to_string(c.n_heads) + "/" + std::to_string(c.n_kv_heads) + " do not divide");
  c.rope_dim = f.find("llama.rope.dimension_count")
                   ? meta_int(f, "llama.rope.dimension_count", 2, c.head_dim())
                   : c.head_dim();
  if (c.rope_dim % 2) throw Error(path + ": llama.rope.dimension_count must be even");
  c.rms_eps = static_cast<float>(f.require_float("llama.attention.layer_norm_rms_epsilon"));
  if (!(c.rms_eps > 0 && c.rms_eps < 1)) throw Error(path + ": layer_norm_rms_epsilon out of range");
  c.rope_theta = static_cast<float>(f.get_float("llama.rope.freq_base").value_or(10000.0));
  if (!(c.rope_theta > 1)) throw Error(path + ": llama.rope.freq_base must be > 1");

  const auto& te = f.require_tensor("token_embd.weight");
  if (te.dims.size() != 2) throw Error(path + ": token_embd.weight must be 2-D");
  c.n_vocab = te.dims[1];
  m->tok_embd = matrix(f, "token_embd.weight", c.n_vocab, c.dim);
  m->output_norm = vector_f32(f, "output_norm.weight", c.dim);
  // Models with tied embeddings have no output.weight.
  m->output = f.find_tensor("output.weight") ? matrix(f, "output.weight", c.n_vocab, c.dim) : m->tok_embd;

  const int64_t kv = c.kv_dim();
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "blk." + std::to_string(i) + ".";
    LlamaLayer l;
    l.attn_norm = vector_f32(f, p + "attn_norm.weight", c.dim);
    l.ffn_norm = vector_f32(f, p + "ffn_norm.weight", c.dim);
    l.wq = matrix(f, p + "attn_q.weight", c.dim, c.dim);
    l.wk = matrix(f, p + "attn_k.weight", kv, c.dim);
    l.wv = matrix(f, p + "attn_v.weight", kv, c.dim);
    l.wo = matrix(f, p + "attn_output.weight", c.dim, c.dim);
    l.w_gate = matrix(f, p + "ffn_gate.weight", c.ffn, c.dim);
    l.w_up = matrix(f, p + "ffn_up.weight", c.ffn, c.dim);
    l.w_down = matrix(f, p + "ffn_down.weight", c.dim, c.ffn);
    m->layers.push_back(std::move(l));
  }
  return m;
}

void LlamaModel::embed(std::span<const int32_t> ids, float* out) const {
  const size_t rb = row_bytes(tok_embd.type, cfg_.dim);
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= cfg_.n_vocab)
      throw Error("token id " + std::to_string(ids[i]) + " is outside the vocabulary (0.." +
                  std::to_string(cfg_.n_vocab - 1) + ")");
    dequantize_row(tok_embd.type, static_cast<const uint8_t*>(tok_embd.data) + rb * ids[i],
                   out + i * cfg_.dim, cfg_.dim);
  }
}

uint64_t LlamaModel::weight_bytes_per_token() const {
  auto bytes = [](const WeightView& w) { return row_bytes(w.type, w.cols) * w.rows; };
  uint64_t total = bytes(output);
  for (const auto& l : layers)
    total += bytes(l.wq) + bytes(l.wk) + bytes(l.wv) + bytes(l.wo) + bytes(l.w_gate) +
             bytes(l.w_up) + bytes(l.w_down);
  return total;
}

std::optional<KvType> kv_type_from_name(std::string_view name) {
  if (name == "auto") return KvType::Auto;
  if (name == "f32") return KvType::F32;
  if (name == "f16") return KvType::F16;
  return std::nullopt;
}

LlamaContext::LlamaContext(const LlamaModel& model, int64_t n_ctx, ThreadPool& pool, KvType kv)
    : m_(model), pool_(pool), n_ctx_(n_ctx) {
  const auto& c = m_.config();
  if (n_ctx < 1 || n_ctx > (1 << 20)) throw Error("context size must be in 1..1048576");
  const size_t n = static_cast<size_t>(c.n_layers * n_ctx * c.kv_dim());
  if (kv == KvType::Auto) kv = 2 * n * sizeof(float) > (size_t{256} << 20) ? KvType::F16 : KvType::F32;
  kv_f16_ = kv == KvType::F16;
  // new T[n] leaves the memory unwritten: pages are only taken as positions fill.
  if (kv_f16_) {
    k_f16_.reset(new uint16_t[n]);
    v_f16_.reset(new uint16_t[n]);
  } else {
    k_f32_.reset(new float[n]);
    v_f32_.reset(new float[n]);
  }
  scores_.assign(static_cast<size_t>(pool.size() * n_ctx), 0.0f);
}

uint64_t LlamaContext::kv_bytes() const {
  const auto& c = m_.config();
  return 2ull * static_cast<uint64_t>(c.n_layers * n_ctx_ * c.kv_dim()) * (kv_f16_ ? 2 : 4);
}

void LlamaContext::ensure_batch(int64_t n) {
  if (n <= batch_cap_) return;
  const auto& c = m_.config();
  x_.resize(n * c.dim);
  xn_.resize(n * c.dim);
  q_.resize(n * c.dim);
  k_.resize(n * c.kv_dim());
  v_.resize(n * c.kv_dim());
  att_.resize(n * c.dim);
  gate_.resize(n * c.ffn);
  up_.resize(n * c.ffn);
  rope_cos_.resize(n * c.rope_dim / 2);
  rope_sin_.resize(n * c.rope_dim / 2);
  batch_cap_ = n;
}

void LlamaContext::eval_tokens(std::span<const int32_t> ids, bool all_logits) {
  std::vector<float> embd(ids.size() * m_.config().dim);
  m_.embed(ids, embd.data());
  eval_embeddings(embd.data(), static_cast<int64_t>(ids.size()), all_logits);
}

// Causal attention of the n new positions over the cache, one (token, head)
// pair per work item.
void LlamaContext::attention(int64_t layer, int64_t n) {
  const auto& c = m_.config();
  const int64_t hd = c.head_dim(), kvd = c.kv_dim(), group = c.n_heads / c.n_kv_heads;
  const size_t base = static_cast<size_t>(layer * n_ctx_ * kvd);
  const float norm = std::sqrt(static_cast<float>(hd));  // divide, as the reference does
  pool_.parallel_for(n * c.n_heads, [&](int64_t begin, int64_t end, int thread) {
    float* sc = scores_.data() + thread * n_ctx_;
    for (int64_t w = begin; w < end; ++w) {
      const int64_t t = w / c.n_heads, h = w % c.n_heads, kvh = h / group;
      const int64_t len = n_past_ + t + 1;
      const float* q = q_.data() + t * c.dim + h * hd;
      const size_t off = base + static_cast<size_t>(kvh * hd);
      float* out = att_.data() + t * c.dim + h * hd;
      std::fill(out, out + hd, 0.0f);
      if (kv_f16_) {
        for (int64_t p = 0; p < len; ++p) sc[p] = ops::dot_f16(q, k_f16_.get() + off + p * kvd, hd) / norm;
        ops::softmax(sc, len);
        for (int64_t p = 0; p < len; ++p) ops::axpy_f16(out, sc[p], v_f16_.get() + off + p * kvd, hd);
      } else {
        for (int64_t p = 0; p < len; ++p) sc[p] = ops::dot(q, k_f32_.get() + off + p * kvd, hd) / norm;
        ops::softmax(sc, len);
        for (int64_t p = 0; p < len; ++p) ops::axpy(out, sc[p], v_f32_.get() + off + p * kvd, hd);
      }
    }
  });
}

void LlamaContext::eval_embeddings(const float* embd, int64_t n, bool all_logits) {
  const auto& c = m_.config();
  if (n < 1) throw Error("nothing to evaluate");
  if (n_past_ + n > n_ctx_)
    throw Error("context is full: " + std::to_string(n_past_) + " + " + std::to_string(n) +
                " positions exceed the context size " + std::to_string(n_ctx_));
  ensure_batch(n);
  const int64_t dim = c.dim, kvd = c.kv_dim(), hd = c.head_dim(), half = c.rope_dim / 2;
  std::memcpy(x_.data(), embd, sizeof(float) * n * dim);
  for (int64_t t = 0; t < n; ++t)
    ops::rope_table(n_past_ + t, c.rope_dim, c.rope_theta, rope_cos_.data() + t * half,
                    rope_sin_.data() + t * half);
  if (keep_hidden) hidden.clear();

  for (int64_t li = 0; li < c.n_layers; ++li) {
    const LlamaLayer& l = m_.layers[li];
    for (int64_t t = 0; t < n; ++t)
      ops::rmsnorm(&x_[t * dim], l.attn_norm.data(), &xn_[t * dim], dim, c.rms_eps);
    matmul(l.wq, xn_.data(), n, q_.data(), pool_);
    matmul(l.wk, xn_.data(), n, k_.data(), pool_);
    matmul(l.wv, xn_.data(), n, v_.data(), pool_);
    for (int64_t t = 0; t < n; ++t) {
      const float* cs = rope_cos_.data() + t * half;
      const float* sn = rope_sin_.data() + t * half;
      for (int64_t h = 0; h < c.n_heads; ++h) ops::rope_interleaved(&q_[t * dim + h * hd], c.rope_dim, cs, sn);
      for (int64_t h = 0; h < c.n_kv_heads; ++h) ops::rope_interleaved(&k_[t * kvd + h * hd], c.rope_dim, cs, sn);
    }
    const size_t at = static_cast<size_t>((li * n_ctx_ + n_past_) * kvd);
    if (kv_f16_) {
      ops::to_f16(k_.data(), k_f16_.get() + at, n * kvd);
      ops::to_f16(v_.data(), v_f16_.get() + at, n * kvd);
    } else {
      std::memcpy(k_f32_.get() + at, k_.data(), sizeof(float) * n * kvd);
      std::memcpy(v_f32_.get() + at, v_.data(), sizeof(float) * n * kvd);
    }
    attention(li, n);
    matmul(l.wo, att_.data(), n, xn_.data(), pool_);
    ops::add(x_.data(), xn_.data(), n * dim);

    for (int64_t t = 0; t < n; ++t)
      ops::rmsnorm(&x_[t * dim], l.ffn_norm.data(), &xn_[t * dim], dim, c.rms_eps);
    matmul(l.w_gate, xn_.data(), n, gate_.data(), pool_);
    matmul(l.w_up, xn_.data(), n, up_.data(), pool_);
    ops::silu_mul(gate_.data(), up_.data(), gate_.data(), n * c.ffn);
    matmul(l.w_down, gate_.data(), n, xn_.data(), pool_);
    ops::add(x_.data(), xn_.data(), n * dim);
    if (keep_hidden) hidden.emplace_back(x_.begin(), x_.begin() + n * dim);
  }

  const int64_t first = all_logits ? 0 : n - 1, n_out = n - first;
  for (int64_t t = first; t < n; ++t)
    ops::rmsnorm(&x_[t * dim], m_.output_norm.data(), &xn_[(t - first) * dim], dim, c.rms_eps);
  if (keep_hidden) hidden.emplace_back(xn_.begin(), xn_.begin() + n_out * dim);
  logits_.resize(n_out * c.n_vocab);
  matmul(m_.output, xn_.data(), n_out, logits_.data(), pool_);
  n_past_ += n;
}

}  // namespace sg
