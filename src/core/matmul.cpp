// Matmul dispatcher: picks the SIMD path, quantizes activations once per
// call, splits the work into tasks over the thread pool, and holds the scalar
// reference kernels (the "scalar" path every SIMD path is tested against).
#include "core/matmul.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "core/cpu.h"
#include "core/error.h"
#include "core/matmul_kernels.h"
#include "core/quant.h"
#include "core/threads.h"

namespace sg {
namespace kern {

void fill_act_aux(DType t, const int8_t* qs, int64_t k, void* aux) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0: {
      const int32_t mul = t == DType::Q8_0 ? -128 : -8;
      auto* o = static_cast<int32_t*>(aux);
      for (int64_t b = 0; b < k / 32; ++b) {
        int32_t s = 0;
        for (int j = 0; j < 32; ++j) s += qs[b * 32 + j];
        o[b] = mul * s;
      }
      return;
    }
    case DType::Q4_K: {
      auto* o = static_cast<int16_t*>(aux);
      for (int64_t b = 0; b < k / 32; ++b) {
        int32_t s = 0;
        for (int j = 0; j < 32; ++j) s += qs[b * 32 + j];
        o[b] = static_cast<int16_t>(s);
      }
      return;
    }
    case DType::Q6_K: {
      auto* o = static_cast<int32_t*>(aux);
      for (int64_t b = 0; b < k / 16; ++b) {
        int32_t s = 0;
        for (int j = 0; j < 16; ++j) s += qs[b * 16 + j];
        o[b] = -32 * s;
      }
      return;
    }
    default: return;
  }
}

namespace {

// ------------------------------------------------------------ scalar kernels

void scalar_quantize_act_row(DType wt, const float* x, int64_t k, int8_t* qs, float* d) {
  if (wt == DType::Q4_K || wt == DType::Q6_K) {
    for (int64_t b = 0; b < k / 256; ++b) {
      const float* xb = x + b * 256;
      float amax = 0, vmax = 0;
      for (int j = 0; j < 256; ++j) {
        if (std::fabs(xb[j]) > amax) {
          amax = std::fabs(xb[j]);
          vmax = xb[j];
        }
      }
      if (amax == 0) {
        d[b] = 0;
        std::memset(qs + b * 256, 0, 256);
        continue;
      }
      const float iscale = -127.0f / vmax;
      for (int j = 0; j < 256; ++j)
        qs[b * 256 + j] = static_cast<int8_t>(std::min(127, static_cast<int>(std::nearbyintf(iscale * xb[j]))));
      d[b] = 1.0f / iscale;
    }
  } else {
    for (int64_t b = 0; b < k / 32; ++b) {
      const float* xb = x + b * 32;
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xb[j]));
      const float db = amax / 127.0f;
      const float id = db != 0 ? 1.0f / db : 0.0f;
      for (int j = 0; j < 32; ++j) qs[b * 32 + j] = static_cast<int8_t>(std::nearbyintf(xb[j] * id));
      d[b] = db;
    }
  }
}

inline void get_scale_min_k4(int j, const uint8_t* q, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

float dot_q8_0(const BlockQ8_0* w, const QRow& a, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    for (int j = 0; j < 32; ++j) s += w[b].qs[j] * a.qs[b * 32 + j];
    sum += f16_to_f32(w[b].d) * a.d[b] * static_cast<float>(s);
  }
  return sum;
}

float dot_q4_0(const BlockQ4_0* w, const QRow& a, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; ++b) {
    int32_t s = 0;
    const int8_t* q = a.qs + b * 32;
    for (int j = 0; j < 16; ++j) s += ((w[b].qs[j] & 0xf) - 8) * q[j] + ((w[b].qs[j] >> 4) - 8) * q[j + 16];
    sum += f16_to_f32(w[b].d) * a.d[b] * static_cast<float>(s);
  }
  return sum;
}

float dot_q4_k(const BlockQ4_K* w, const QRow& a, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* q = a.qs + b * 256;
    int32_t s_sc = 0, s_mn = 0;
    for (int j = 0; j < 8; ++j) {
      int sc, mn;
      get_scale_min_k4(j, w[b].scales, &sc, &mn);
      const uint8_t* nib = w[b].qs + 32 * (j / 2);
      const int shift = (j & 1) * 4;
      int32_t s = 0, sa = 0;
      for (int l = 0; l < 32; ++l) {
        s += ((nib[l] >> shift) & 0xf) * q[32 * j + l];
        sa += q[32 * j + l];
      }
      s_sc += sc * s;
      s_mn += mn * sa;
    }
    sum += a.d[b] * (f16_to_f32(w[b].d) * static_cast<float>(s_sc) - f16_to_f32(w[b].dmin) * static_cast<float>(s_mn));
  }
  return sum;
}

float dot_q6_k(const BlockQ6_K* w, const QRow& a, int64_t nb) {
  float sum = 0;
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* q = a.qs + b * 256;
    int32_t s = 0;
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = w[b].ql + 64 * h;
      const uint8_t* qh = w[b].qh + 32 * h;
      const int8_t* sc = w[b].scales + 8 * h;
      const int8_t* qq = q + 128 * h;
      int32_t s4[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // per 16-element sub-block
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        s4[is + 0] += (((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32) * qq[l];
        s4[is + 2] += (((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32) * qq[l + 32];
        s4[is + 4] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * qq[l + 64];
        s4[is + 6] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * qq[l + 96];
      }
      for (int j = 0; j < 8; ++j) s += sc[j] * s4[j];
    }
    sum += a.d[b] * f16_to_f32(w[b].d) * static_cast<float>(s);
  }
  return sum;
}

void scalar_qgemv(const WeightView& w, const uint8_t* acts, const ActLayout& L, int64_t m, int64_t r0, int64_t r1,
                  float* y, int64_t ldy) {
  const size_t rb = row_bytes(w.type, w.cols);
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = r0; r < r1; ++r) {
    const void* wr = base + static_cast<size_t>(r) * rb;
    for (int64_t i = 0; i < m; ++i) {
      const QRow a = qrow(acts, L, i);
      float v = 0;
      switch (w.type) {
        case DType::Q8_0: v = dot_q8_0(static_cast<const BlockQ8_0*>(wr), a, w.cols / 32); break;
        case DType::Q4_0: v = dot_q4_0(static_cast<const BlockQ4_0*>(wr), a, w.cols / 32); break;
        case DType::Q4_K: v = dot_q4_k(static_cast<const BlockQ4_K*>(wr), a, w.cols / 256); break;
        case DType::Q6_K: v = dot_q6_k(static_cast<const BlockQ6_K*>(wr), a, w.cols / 256); break;
        default: break;
      }
      y[i * ldy + r] = v;
    }
  }
}

inline float load_b(DType bt, const void* b, int64_t idx) {
  switch (bt) {
    case DType::F16: return f16_to_f32(static_cast<const uint16_t*>(b)[idx]);
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(b)[idx]);
    default: return static_cast<const float*>(b)[idx];
  }
}

// The reference path accumulates in double: it is the yardstick the SIMD
// paths are tested against, so it should carry no float round-off of its own.
void scalar_fgemv(DType bt, const float* a, int64_t lda, const void* b, int64_t ldb, float* c, int64_t ldc,
                  int64_t m, int64_t j0, int64_t j1, int64_t k, bool accumulate) {
  const int64_t i0 = 0, i1 = m;
  float brow[512];
  for (int64_t j = j0; j < j1; ++j) {
    for (int64_t i = i0; i < i1; ++i) {
      const float* ar = a + i * lda;
      double acc = 0;
      for (int64_t k0 = 0; k0 < k; k0 += 512) {
        const int64_t kn = std::min<int64_t>(512, k - k0);
        for (int64_t t = 0; t < kn; ++t) brow[t] = load_b(bt, b, j * ldb + k0 + t);
        for (int64_t t = 0; t < kn; ++t) acc += static_cast<double>(ar[k0 + t]) * brow[t];
      }
      float* out = c + i * ldc + j;
      *out = accumulate ? static_cast<float>(*out + acc) : static_cast<float>(acc);
    }
  }
}

}  // namespace

const Isa kScalarIsa = {
    "scalar", scalar_quantize_act_row, scalar_qgemv, scalar_fgemv, 0, nullptr, nullptr, nullptr, 1 << 30, 1 << 30,
};

}  // namespace kern

// ================================================================ dispatcher

namespace {

using kern::Isa;

const Isa* isa_by_name(const char* name) {
  if (!name) return nullptr;
  const std::string n(name);
  const CpuFeatures& f = cpu_features();
  if (n == "scalar") return &kern::kScalarIsa;
  if (n == "avx2") return f.has_avx2_path() ? kern::avx2_isa() : nullptr;
  if (n == "avx512vnni" || n == "avx512") return f.has_avx512_path() ? kern::avx512_isa() : nullptr;
  return nullptr;
}

const Isa* best_isa() {
  const Isa* best = isa_by_name("avx512vnni");
  if (!best) best = isa_by_name("avx2");
  if (!best) best = &kern::kScalarIsa;
  if (const char* env = std::getenv("SKINGPT_SIMD"); env && *env) {
    if (const Isa* e = isa_by_name(env)) return e;
    std::fprintf(stderr, "SKINGPT_SIMD=%s: unknown or not supported by this CPU; using %s\n", env, best->name);
  }
  return best;
}

std::atomic<const Isa*>& current_isa_slot() {
  static std::atomic<const Isa*> slot{best_isa()};
  return slot;
}

const Isa& current_isa() { return *current_isa_slot().load(std::memory_order_acquire); }

// Runs fn(task) for task in [0, n) on all pool threads, handing out tasks
// dynamically (a shared counter) so a thread slowed by another process does
// not hold the others up.
template <class F>
void run_tasks(ThreadPool* pool, int64_t n, F&& fn) {
  if (n <= 0) return;
  if (!pool || pool->size() == 1 || n == 1) {
    for (int64_t t = 0; t < n; ++t) fn(t);
    return;
  }
  struct Ctx {
    std::atomic<int64_t> next{0};
    int64_t n;
    std::remove_reference_t<F>* fn;
  } ctx;
  ctx.n = n;
  ctx.fn = &fn;
  // One pointer of captures: std::function keeps it inline (no allocation).
  pool->run([c = &ctx](int) {
    for (int64_t t; (t = c->next.fetch_add(1, std::memory_order_relaxed)) < c->n;) (*c->fn)(t);
  });
}

int pool_threads(ThreadPool* pool) { return pool ? pool->size() : 1; }

// Chunk of rows per task for a loop over output features: several tasks per
// thread (load balance), multiples of 32 rows (SIMD tiles), not too small.
int64_t row_chunk(int64_t rows, int threads, int64_t min_chunk) {
  if (threads <= 1) return std::max<int64_t>(rows, 1);
  int64_t c = rows / (threads * 6);
  c = std::max<int64_t>(c, min_chunk);
  c = (c + 31) / 32 * 32;
  return std::max<int64_t>(c, 1);
}

// Grow-only scratch owned by the calling thread: quantized activation rows
// and packed activation vectors.
thread_local kern::Scratch t_act_scratch;
thread_local kern::Scratch t_pack_scratch;

// Quantizes one activation row into its record and zeroes the padding.
void prepare_act_row(const Isa& isa, DType wt, const float* x, int64_t k, const kern::ActLayout& L, uint8_t* r) {
  auto* qs = reinterpret_cast<int8_t*>(r + L.qs_off);
  auto* d = reinterpret_cast<float*>(r + L.d_off);
  isa.quantize_act_row(wt, x, k, qs, d);
  std::memset(qs + L.qs_bytes, 0, L.d_off - L.qs_off - L.qs_bytes);
  std::memset(d + L.d_count, 0, L.aux_off - L.d_off - L.d_count * 4);
  kern::fill_act_aux(wt, qs, k, r + L.aux_off);
  std::memset(r + L.aux_off + L.aux_count * L.aux_elem, 0, L.row_bytes - L.aux_off - L.aux_count * L.aux_elem);
}

// The packed path: pack activation vectors (parallel), then tasks of weight
// rows x activation vectors.
void packed_matmul(const Isa& isa, DType wt, const float* x, int64_t lda, const uint8_t* qacts,
                   const kern::ActLayout* L, const void* w, size_t w_row_bytes, int64_t m, int64_t n, int64_t k,
                   float* c, int64_t ldc, bool accumulate, ThreadPool* pool) {
  const int64_t nvec = (m + isa.vec_rows - 1) / isa.vec_rows;
  const size_t vb = isa.pack_bytes(wt, k);
  uint8_t* packed = t_pack_scratch.get(vb * static_cast<size_t>(nvec));
  const int nt = pool_threads(pool);
  auto pack_range = [&](int64_t b, int64_t e) {
    for (int64_t v = b; v < e; ++v)
      isa.pack_acts(wt, x, lda, qacts, L ? *L : kern::ActLayout{}, m, k, v, packed + vb * static_cast<size_t>(v));
  };
  if (!pool || nt == 1 || nvec == 1)
    pack_range(0, nvec);
  else
    pool->parallel_for(nvec, [&](int64_t b, int64_t e, int) { pack_range(b, e); });

  // Activation vectors per task: all of them unless there are many. Weight
  // rows per task: a multiple of 24 (the kernels' register tiles are 12, 6, 4
  // or 2 rows), at most 120, smaller only when needed for several tasks per
  // thread.
  const int64_t vblk = nvec <= 24 ? nvec : 16;
  const int64_t vtasks = (nvec + vblk - 1) / vblk;
  int64_t nchunk = 120;
  if (nt > 1)
    while (nchunk > 24 && (n + nchunk - 1) / nchunk * vtasks < 6 * nt) nchunk -= 24;
  if (nchunk > n) nchunk = n;
  const int64_t ntasks_n = (n + nchunk - 1) / nchunk;
  run_tasks(pool, ntasks_n * vtasks, [&](int64_t t) {
    const int64_t jt = t / vtasks, it = t % vtasks;
    const int64_t j0 = jt * nchunk, j1 = std::min(n, j0 + nchunk);
    const int64_t v0 = it * vblk, v1 = std::min(nvec, v0 + vblk);
    isa.gemm_packed(wt, w, w_row_bytes, k, packed, vb, v0, v1, m, j0, j1, c, ldc, accumulate);
  });
}

void float_matmul(const Isa& isa, DType bt, const float* a, int64_t lda, const void* b, int64_t ldb, float* c,
                  int64_t ldc, int64_t m, int64_t n, int64_t k, bool accumulate, ThreadPool* pool) {
  if (isa.vec_rows > 0 && m >= isa.fgemm_min_m) {
    const size_t esize = bt == DType::F32 ? 4 : 2;
    packed_matmul(isa, bt, a, lda, nullptr, nullptr, b, static_cast<size_t>(ldb) * esize, m, n, k, c, ldc,
                  accumulate, pool);
    return;
  }
  // Few rows: memory-bound on B; split B rows finely. Rows of A in groups
  // so that a B tile is reused from cache.
  const int nt = pool_threads(pool);
  const int64_t chunk = row_chunk(n, nt, 32);
  const int64_t ntask = (n + chunk - 1) / chunk;
  run_tasks(pool, ntask, [&](int64_t t) {
    const int64_t j0 = t * chunk, j1 = std::min(n, j0 + chunk);
    isa.fgemv(bt, a, lda, b, ldb, c, ldc, m, j0, j1, k, accumulate);
  });
}

}  // namespace

const char* simd_path() { return current_isa().name; }

bool force_simd_path(const char* name) {
  const Isa* i = isa_by_name(name);
  if (!i) return false;
  current_isa_slot().store(i, std::memory_order_release);
  return true;
}

std::vector<const char*> available_simd_paths() {
  std::vector<const char*> v{"scalar"};
  if (isa_by_name("avx2")) v.push_back("avx2");
  if (isa_by_name("avx512vnni")) v.push_back("avx512vnni");
  return v;
}

void matmul(const WeightView& w, const float* x, int64_t m, float* y, ThreadPool& pool) {
  if (m < 0 || w.rows < 0 || w.cols < 0) throw Error("matmul: negative size");
  const auto& tr = traits(w.type);
  if (w.cols % tr.block_elems != 0)
    throw Error("matmul: row length " + std::to_string(w.cols) + " is not a multiple of the " +
                std::string(tr.name) + " block size");
  if (m == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    std::fill(y, y + m * w.rows, 0.0f);
    return;
  }
  const Isa& isa = current_isa();
  if (w.type == DType::F32 || w.type == DType::F16 || w.type == DType::BF16) {
    float_matmul(isa, w.type, x, w.cols, w.data, w.cols, y, w.rows, m, w.rows, w.cols, false, &pool);
    return;
  }
  if (!kern::is_quant_type(w.type)) throw Error("matmul: weight type " + std::string(tr.name) + " is not supported");

  // 1. Quantize the activation rows once.
  const kern::ActLayout L = kern::act_layout(w.type, w.cols);
  uint8_t* acts = t_act_scratch.get(static_cast<size_t>(m) * L.row_bytes);
  auto quant_rows = [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      prepare_act_row(isa, w.type, x + i * w.cols, w.cols, L, acts + static_cast<size_t>(i) * L.row_bytes);
  };
  if (m == 1 || pool.size() == 1)
    quant_rows(0, m);
  else
    pool.parallel_for(m, [&](int64_t b, int64_t e, int) { quant_rows(b, e); });

  // 2. Fused dot kernels over tasks.
  const int64_t n = w.rows;
  const size_t rb = row_bytes(w.type, w.cols);
  if (isa.vec_rows > 0 && m >= isa.qgemm_min_m) {
    packed_matmul(isa, w.type, nullptr, 0, acts, &L, w.data, rb, m, n, w.cols, y, n, false, &pool);
    return;
  }
  const int64_t chunk = row_chunk(n, pool.size(), 32);
  const int64_t ntask = (n + chunk - 1) / chunk;
  run_tasks(&pool, ntask, [&](int64_t t) {
    const int64_t r0 = t * chunk, r1 = std::min(n, r0 + chunk);
    isa.qgemv(w, acts, L, m, r0, r1, y, n);
  });
}

void gemm_f32_nt(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb,
                 int64_t ldc, ThreadPool* pool, bool accumulate) {
  if (m < 0 || n < 0 || k < 0) throw Error("gemm_f32_nt: negative size");
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.0f);
    return;
  }
  float_matmul(current_isa(), DType::F32, a, lda, b, ldb, c, ldc, m, n, k, accumulate, pool);
}

}  // namespace sg
