#include "model/vision.h"

#include <chrono>
#include <cmath>
#include <cstring>
#include <functional>

#include "core/error.h"
#include "core/ops.h"
#include "core/quant.h"
#include "core/threads.h"
#include "formats/gguf.h"
#include "model/vision_file.h"

namespace sg {

namespace {

std::vector<float> load_vec(const gguf::File& f, const std::string& name, int64_t n) {
  const auto& t = f.require_tensor(name);
  if (t.n_elements() != n)
    throw Error(f.path() + ": tensor '" + name + "' has " + std::to_string(t.n_elements()) +
                " elements, expected " + std::to_string(n));
  std::vector<float> v(n);
  dequantize_row(t.type, f.tensor_data(t), v.data(), n);
  return v;
}

WeightView load_matrix(const gguf::File& f, const std::string& name, int64_t rows, int64_t cols) {
  const auto& t = f.require_tensor(name);
  if (t.dims.size() != 2 || t.dims[0] != cols || t.dims[1] != rows)
    throw Error(f.path() + ": tensor '" + name + "' must have shape [" + std::to_string(cols) + ", " +
                std::to_string(rows) + "]");
  if (t.type == DType::Q8_K) throw Error(f.path() + ": tensor '" + name + "' has activation-only type q8_k");
  return WeightView{t.type, f.tensor_data(t), rows, cols};
}

Linear load_linear(const gguf::File& f, const std::string& name, int64_t in, int64_t out) {
  return Linear{load_matrix(f, name + ".weight", out, in), load_vec(f, name + ".bias", out)};
}

Norm load_norm(const gguf::File& f, const std::string& name, int64_t n) {
  return Norm{load_vec(f, name + ".weight", n), load_vec(f, name + ".bias", n)};
}

// The elementwise work between matmuls runs on all threads too: at ViT-g
// sizes (257 tokens × 6144) a single-threaded GELU or bias pass costs as much
// as a matmul.
void for_rows(ThreadPool& pool, int64_t m, const std::function<void(int64_t, int64_t)>& fn) {
  pool.parallel_for(m, [&](int64_t b, int64_t e, int) { fn(b, e); });
}

// y[m × out] = x[m × in] · Wᵀ + b
void linear(const Linear& l, const float* x, int64_t m, float* y, ThreadPool& pool) {
  matmul(l.w, x, m, y, pool);
  if (!l.b.empty())
    for_rows(pool, m, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) ops::add(y + i * l.w.rows, l.b.data(), l.w.rows);
    });
}

void layernorm_rows(const Norm& n, const float* x, float* y, int64_t m, int64_t w, float eps, ThreadPool& pool) {
  for_rows(pool, m, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) ops::layernorm(x + i * w, n.w.data(), n.b.data(), y + i * w, w, eps);
  });
}

void gelu_rows(float* x, int64_t m, int64_t w, ThreadPool& pool) {
  for_rows(pool, m, [&](int64_t b, int64_t e) { ops::gelu_erf(x + b * w, (e - b) * w); });
}

void add_rows(float* y, const float* x, int64_t m, int64_t w, ThreadPool& pool) {
  for_rows(pool, m, [&](int64_t b, int64_t e) { ops::add(y + b * w, x + b * w, (e - b) * w); });
}

// Multi-head attention: out[nq × heads·hd] from q [nq rows, stride ldq],
// k/v [nk rows, stride ldk/ldv]. scores = (q·kᵀ)·q_scale / k_div per head,
// then softmax and ·v. One head per work item; per-thread scratch.
struct Attention {
  std::vector<float> scores, vt;  // per thread: [nq × nk], [hd × nk]
  void run(const float* q, int64_t ldq, const float* k, int64_t ldk, const float* v, int64_t ldv, float* out,
           int64_t ldo, int64_t nq, int64_t nk, int64_t heads, int64_t hd, float k_div, ThreadPool& pool) {
    const int nt = pool.size();
    scores.resize(static_cast<size_t>(nt * nq * nk));
    vt.resize(static_cast<size_t>(nt * hd * nk));
    pool.parallel_for(heads, [&](int64_t b, int64_t e, int th) {
      float* sc = scores.data() + th * nq * nk;
      float* vth = vt.data() + th * hd * nk;
      for (int64_t h = b; h < e; ++h) {
        gemm_f32_nt(q + h * hd, k + h * hd, sc, nq, nk, hd, ldq, ldk, nk, nullptr);
        for (int64_t i = 0; i < nq; ++i) {
          float* row = sc + i * nk;
          if (k_div != 1.0f)
            for (int64_t j = 0; j < nk; ++j) row[j] /= k_div;
          ops::softmax(row, nk);
        }
        for (int64_t j = 0; j < nk; ++j)
          for (int64_t d = 0; d < hd; ++d) vth[d * nk + j] = v[j * ldv + h * hd + d];
        gemm_f32_nt(sc, vth, out + h * hd, nq, hd, nk, nk, nk, ldo, nullptr);
      }
    });
  }
};

}  // namespace

VisionModel::~VisionModel() = default;

std::unique_ptr<VisionModel> VisionModel::load(const std::string& path, gguf::Residency residency) {
  std::unique_ptr<VisionModel> m(new VisionModel());
  m->file_ = gguf::File::open(path, residency);
  const gguf::File& f = *m->file_;
  const VisionConfig c = read_vision_config(f);
  m->cfg_ = c;
  const int64_t W = c.vit_width, Q = c.qf_width;
  m->patch_embed = load_linear(f, "v.patch_embd", 3 * c.patch_size * c.patch_size, W);
  m->cls_token = load_vec(f, "v.cls_token", W);
  m->pos_embed = load_vec(f, "v.pos_embed", W * c.n_tokens());
  for (int64_t i = 0; i < c.vit_depth; ++i) {
    const std::string p = "v.blk." + std::to_string(i) + ".";
    VitBlock b;
    b.norm1 = load_norm(f, p + "norm1", W);
    b.norm2 = load_norm(f, p + "norm2", W);
    b.qkv.w = load_matrix(f, p + "attn_qkv.weight", 3 * W, W);
    // EVA's qkv bias is cat(q_bias, zeros, v_bias): K has no bias.
    b.qkv.b.assign(3 * W, 0.0f);
    const auto qb = load_vec(f, p + "attn_q_bias", W), vb = load_vec(f, p + "attn_v_bias", W);
    std::copy(qb.begin(), qb.end(), b.qkv.b.begin());
    std::copy(vb.begin(), vb.end(), b.qkv.b.begin() + 2 * W);
    b.proj = load_linear(f, p + "attn_out", W, W);
    b.fc1 = load_linear(f, p + "ffn_up", W, c.vit_ffn);
    b.fc2 = load_linear(f, p + "ffn_down", c.vit_ffn, W);
    m->vit.push_back(std::move(b));
  }
  m->ln_vision = load_norm(f, "ln_vision", W);
  m->query_tokens = load_vec(f, "qf.query_tokens", Q * c.n_query);
  m->qf_embed_norm = load_norm(f, "qf.embd_norm", Q);
  for (int64_t i = 0; i < c.qf_depth; ++i) {
    const std::string p = "qf.blk." + std::to_string(i) + ".";
    QformerLayer l;
    l.self_q = load_linear(f, p + "self_q", Q, Q);
    l.self_k = load_linear(f, p + "self_k", Q, Q);
    l.self_v = load_linear(f, p + "self_v", Q, Q);
    l.self_out = load_linear(f, p + "self_out", Q, Q);
    l.self_norm = load_norm(f, p + "self_norm", Q);
    l.has_cross = c.has_cross(i);
    if (l.has_cross) {
      l.cross_q = load_linear(f, p + "cross_q", Q, Q);
      l.cross_k = load_linear(f, p + "cross_k", W, Q);
      l.cross_v = load_linear(f, p + "cross_v", W, Q);
      l.cross_out = load_linear(f, p + "cross_out", Q, Q);
      l.cross_norm = load_norm(f, p + "cross_norm", Q);
    }
    l.ffn_up = load_linear(f, p + "ffn_up", Q, c.qf_ffn);
    l.ffn_down = load_linear(f, p + "ffn_down", c.qf_ffn, Q);
    l.ffn_norm = load_norm(f, p + "ffn_norm", Q);
    m->qformer.push_back(std::move(l));
  }
  m->proj = load_linear(f, "proj", Q, c.llm_dim);
  return m;
}

std::vector<float> VisionModel::encode(const float* image, ThreadPool& pool, const VisionTrace& trace,
                                       EncodeTimings* timings) const {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  const VisionConfig& c = cfg_;
  const int64_t W = c.vit_width, T = c.n_tokens(), P = c.patch_size, G = c.image_size / P;
  const int64_t S = c.image_size, K = 3 * P * P, hd = W / c.vit_heads;
  auto emit = [&](const std::string& name, const float* d, size_t n) {
    if (trace) trace(name, d, n);
  };

  // Patch embedding as a matmul over im2col rows ordered (channel, row, col),
  // the layout of a PyTorch Conv2d weight.
  std::vector<float> cols(G * G * K), x(T * W), h(T * W), big(T * std::max(3 * W, c.vit_ffn)), att(T * W);
  for (int64_t gy = 0; gy < G; ++gy)
    for (int64_t gx = 0; gx < G; ++gx) {
      float* dst = cols.data() + (gy * G + gx) * K;
      for (int64_t ch = 0; ch < 3; ++ch)
        for (int64_t r = 0; r < P; ++r)
          std::memcpy(dst + (ch * P + r) * P, image + (ch * S + gy * P + r) * S + gx * P, sizeof(float) * P);
    }
  linear(patch_embed, cols.data(), G * G, x.data() + W, pool);
  emit("vit.patch_embed", x.data() + W, G * G * W);
  std::memcpy(x.data(), cls_token.data(), sizeof(float) * W);
  ops::add(x.data(), pos_embed.data(), T * W);
  emit("vit.embed_with_cls_pos", x.data(), T * W);

  Attention attn;
  const float scale = static_cast<float>(std::pow(static_cast<double>(hd), -0.5));  // as Python computes it
  for (size_t bi = 0; bi < vit.size(); ++bi) {
    const VitBlock& b = vit[bi];
    const std::string name = "vit.blocks." + std::to_string(bi);
    layernorm_rows(b.norm1, x.data(), h.data(), T, W, c.vit_eps, pool);
    linear(b.qkv, h.data(), T, big.data(), pool);
    // EVA scales q by head_dim^-0.5 before q·kᵀ.
    for_rows(pool, T, [&](int64_t b0, int64_t e0) {
      for (int64_t t = b0; t < e0; ++t)
        for (int64_t i = 0; i < W; ++i) big[t * 3 * W + i] *= scale;
    });
    attn.run(big.data(), 3 * W, big.data() + W, 3 * W, big.data() + 2 * W, 3 * W, att.data(), W, T, T,
             c.vit_heads, hd, 1.0f, pool);
    linear(b.proj, att.data(), T, h.data(), pool);
    emit(name + ".attn_out", h.data(), T * W);
    add_rows(x.data(), h.data(), T, W, pool);
    layernorm_rows(b.norm2, x.data(), h.data(), T, W, c.vit_eps, pool);
    linear(b.fc1, h.data(), T, big.data(), pool);
    gelu_rows(big.data(), T, c.vit_ffn, pool);
    linear(b.fc2, big.data(), T, h.data(), pool);
    emit(name + ".mlp_out", h.data(), T * W);
    add_rows(x.data(), h.data(), T, W, pool);
    emit(name + ".out", x.data(), T * W);
  }
  emit("vit_out", x.data(), T * W);
  std::vector<float> img(T * W);
  layernorm_rows(ln_vision, x.data(), img.data(), T, W, c.ln_vision_eps, pool);
  emit("ln_vision_out", img.data(), T * W);
  const auto t1 = clock::now();

  // Q-Former over the learned queries (post-LN BERT layers).
  const int64_t Q = c.qf_width, NQ = c.n_query, qhd = Q / c.qf_heads;
  const float qdiv = static_cast<float>(std::sqrt(static_cast<double>(qhd)));
  std::vector<float> q(NQ * Q), tmp(NQ * Q), qq(NQ * Q), kk(T * Q), vv(T * Q), ctx(NQ * Q), ffn(NQ * c.qf_ffn);
  layernorm_rows(qf_embed_norm, query_tokens.data(), q.data(), NQ, Q, c.qf_eps, pool);
  emit("qformer.embeddings_out", q.data(), NQ * Q);
  // LayerNorm(dense(ctx) + residual) → residual
  auto close_block = [&](const Linear& dense, const float* in, const Norm& norm) {
    linear(dense, in, NQ, tmp.data(), pool);
    ops::add(tmp.data(), q.data(), NQ * Q);
    layernorm_rows(norm, tmp.data(), q.data(), NQ, Q, c.qf_eps, pool);
  };
  for (size_t li = 0; li < qformer.size(); ++li) {
    const QformerLayer& l = qformer[li];
    const std::string name = "qformer.layer." + std::to_string(li);
    linear(l.self_q, q.data(), NQ, qq.data(), pool);
    linear(l.self_k, q.data(), NQ, kk.data(), pool);
    linear(l.self_v, q.data(), NQ, vv.data(), pool);
    attn.run(qq.data(), Q, kk.data(), Q, vv.data(), Q, ctx.data(), Q, NQ, NQ, c.qf_heads, qhd, qdiv, pool);
    close_block(l.self_out, ctx.data(), l.self_norm);
    emit(name + ".self_attn_out", q.data(), NQ * Q);
    if (l.has_cross) {
      linear(l.cross_q, q.data(), NQ, qq.data(), pool);
      linear(l.cross_k, img.data(), T, kk.data(), pool);
      linear(l.cross_v, img.data(), T, vv.data(), pool);
      attn.run(qq.data(), Q, kk.data(), Q, vv.data(), Q, ctx.data(), Q, NQ, T, c.qf_heads, qhd, qdiv, pool);
      close_block(l.cross_out, ctx.data(), l.cross_norm);
      emit(name + ".cross_attn_out", q.data(), NQ * Q);
    }
    linear(l.ffn_up, q.data(), NQ, ffn.data(), pool);
    gelu_rows(ffn.data(), NQ, c.qf_ffn, pool);
    close_block(l.ffn_down, ffn.data(), l.ffn_norm);
    emit(name + ".ffn_query_out", q.data(), NQ * Q);
    emit(name + ".out", q.data(), NQ * Q);
  }
  emit("qformer_out", q.data(), NQ * Q);
  std::vector<float> out(NQ * c.llm_dim);
  linear(proj, q.data(), NQ, out.data(), pool);
  emit("llama_proj_out", out.data(), out.size());
  if (timings) {
    timings->vit_ms = std::chrono::duration<double, std::milli>(t1 - t0).count();
    timings->qformer_ms = std::chrono::duration<double, std::milli>(clock::now() - t1).count();
  }
  return out;
}

}  // namespace sg
