// AVX2 + FMA + F16C kernels. Same structure as matmul_avx512.cpp (see there)
// with 8 lanes: row-dot kernels for few activation rows, packed activation
// vectors of 8 rows for many. The int8 dot of 4 codes uses vpmaddubsw +
// vpmaddwd (no VNNI); Q8_0 uses the sign trick because u8 x s8 pairs of full
// range would saturate vpmaddubsw.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/matmul_kernels.h"
#include "core/quant.h"

namespace sg::kern {
namespace {

constexpr int VL = 8;

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline float hmax8(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 ld_w(DType bt, const void* p) {
  switch (bt) {
    case DType::F16: return _mm256_cvtph_ps(_mm_loadu_si128(static_cast<const __m128i*>(p)));
    case DType::BF16:
      return _mm256_castsi256_ps(
          _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(static_cast<const __m128i*>(p))), 16));
    default: return _mm256_loadu_ps(static_cast<const float*>(p));
  }
}
inline size_t esize(DType bt) { return bt == DType::F32 ? 4 : 2; }

// Loads n < 8 weights (rest zero) as floats.
inline __m256 ld_w_part(DType bt, const void* p, int n) {
  alignas(32) float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; ++i) {
    switch (bt) {
      case DType::F16: tmp[i] = h2f(static_cast<const uint16_t*>(p)[i]); break;
      case DType::BF16: tmp[i] = bf16_to_f32(static_cast<const uint16_t*>(p)[i]); break;
      default: tmp[i] = static_cast<const float*>(p)[i]; break;
    }
  }
  return _mm256_load_ps(tmp);
}
inline __m256 ld_f_part(const float* p, int n) {
  alignas(32) float tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; ++i) tmp[i] = p[i];
  return _mm256_load_ps(tmp);
}

// Sum of products of 4 u8 x 4 s8 per 32-bit lane (no saturation for the
// value ranges used here: u8 <= 63 against s8, or |u8| <= 128 x |s8| <= 127).
inline __m256i dot4(__m256i u8, __m256i s8) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u8, s8), _mm256_set1_epi16(1));
}

// ============================================================ activations

// 8 int32 → 8 int8 stored at dst.
inline void store_i8x8(int8_t* dst, __m256i q) {
  const __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(q), _mm256_extracti128_si256(q, 1));
  const __m128i p8 = _mm_packs_epi16(p16, p16);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), p8);
}

void quantize_act_row(DType wt, const float* x, int64_t k, int8_t* qs, float* d) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  if (wt == DType::Q4_K || wt == DType::Q6_K) {
    for (int64_t b = 0; b < k / 256; ++b) {
      const float* xb = x + b * 256;
      __m256 vmax = _mm256_setzero_ps();
      _Pragma("GCC unroll 16") for (int j = 0; j < 32; ++j) vmax = _mm256_max_ps(vmax, _mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 8 * j)));
      const float amax = hmax8(vmax);
      if (amax == 0) {
        d[b] = 0;
        std::memset(qs + b * 256, 0, 256);
        continue;
      }
      float vm = 0;
      const __m256 va = _mm256_set1_ps(amax);
      _Pragma("GCC unroll 16") for (int j = 0; j < 32; ++j) {
        const int mk = _mm256_movemask_ps(
            _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xb + 8 * j)), va, _CMP_EQ_OQ));
        if (mk) {
          vm = xb[8 * j + __builtin_ctz(static_cast<unsigned>(mk))];
          break;
        }
      }
      const float iscale = -127.0f / vm;
      const __m256 vs = _mm256_set1_ps(iscale);
      const __m256i lim = _mm256_set1_epi32(127);
      _Pragma("GCC unroll 16") for (int j = 0; j < 32; ++j) {
        const __m256i q = _mm256_min_epi32(_mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + 8 * j), vs)), lim);
        store_i8x8(qs + b * 256 + 8 * j, q);
      }
      d[b] = 1.0f / iscale;
    }
    return;
  }
  for (int64_t b = 0; b < k / 32; ++b) {
    __m256 v[4];
    __m256 m = _mm256_setzero_ps();
    _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j) {
      v[j] = _mm256_loadu_ps(x + 32 * b + 8 * j);
      m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
    }
    const float amax = hmax8(m);
    const float db = amax / 127.0f;
    const float id = db != 0 ? 1.0f / db : 0.0f;
    const __m256 vi = _mm256_set1_ps(id);
    _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j) store_i8x8(qs + 32 * b + 8 * j, _mm256_cvtps_epi32(_mm256_mul_ps(v[j], vi)));
    d[b] = db;
  }
}

// ============================================================ row-dot kernels

template <int NA>
void qgemv_q8_0(const uint8_t* wb, size_t rb, int64_t nb, const QRow* a, int64_t r0, int64_t r1, float* const* y) {
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ8_0*>(wb + r * rb);
    __m256 acc[NA];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs));
      const __m256i aq = _mm256_sign_epi8(q, q);
      const float dw = h2f(w[b].d);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs + 32 * b));
        const __m256i p = dot4(aq, _mm256_sign_epi8(av, q));
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(dw * a[i].d[b]), acc[i]);
      }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) y[i][r] = hsum8(acc[i]);
  }
}

template <int NA>
void qgemv_q4_0(const uint8_t* wb, size_t rb, int64_t nb, const QRow* a, int64_t r0, int64_t r1, float* const* y) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ4_0*>(wb + r * rb);
    __m256 acc[NA];
    float accs[NA];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
      acc[i] = _mm256_setzero_ps();
      accs[i] = 0;
    }
    for (int64_t b = 0; b < nb; ++b) {
      const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));
      const __m256i nib =
          _mm256_and_si256(_mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1), m4);
      const float dw = h2f(w[b].d);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a[i].qs + 32 * b));
        const float s = dw * a[i].d[b];
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot4(nib, av)), _mm256_set1_ps(s), acc[i]);
        accs[i] += s * static_cast<float>(static_cast<const int32_t*>(a[i].aux)[b]);  // -8 * sum(a)
      }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) y[i][r] = hsum8(acc[i]) + accs[i];
  }
}

inline void q4k_scales(const uint8_t* s, uint8_t* out16) {
  uint32_t a0, a1, a2;
  std::memcpy(&a0, s, 4);
  std::memcpy(&a1, s + 4, 4);
  std::memcpy(&a2, s + 8, 4);
  const uint32_t v[4] = {a0 & 0x3f3f3f3f, (a2 & 0x0f0f0f0f) | (((a0 >> 6) & 0x03030303) << 4), a1 & 0x3f3f3f3f,
                         ((a2 >> 4) & 0x0f0f0f0f) | (((a1 >> 6) & 0x03030303) << 4)};
  std::memcpy(out16, v, 16);  // [sc0..7, m0..7]
}

template <int NA>
void qgemv_q4_k(const uint8_t* wb, size_t rb, int64_t nb, const QRow* a, int64_t r0, int64_t r1, float* const* y) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ4_K*>(wb + r * rb);
    __m256 acc[NA];
    __m128 accm[NA];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
      acc[i] = _mm256_setzero_ps();
      accm[i] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) {
      alignas(16) uint8_t sm[16];
      q4k_scales(w[b].scales, sm);
      const __m128i mins = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sm + 8)));
      const float d = h2f(w[b].d), dmin = h2f(w[b].dmin);
      __m256i T[NA];
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) T[i] = _mm256_setzero_si256();
      _Pragma("GCC unroll 16") for (int c = 0; c < 4; ++c) {
        const __m256i L = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs + 32 * c));
        const __m256i lo = _mm256_and_si256(L, m4), hi = _mm256_and_si256(_mm256_srli_epi16(L, 4), m4);
        const __m256i s0 = _mm256_set1_epi16(sm[2 * c]), s1 = _mm256_set1_epi16(sm[2 * c + 1]);
        _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
          const int8_t* q = a[i].qs + b * 256 + 64 * c;
          const __m256i p0 = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
          const __m256i p1 = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + 32)));
          T[i] = _mm256_add_epi32(T[i], _mm256_add_epi32(_mm256_madd_epi16(p0, s0), _mm256_madd_epi16(p1, s1)));
        }
      }
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
        const auto* bs = static_cast<const int16_t*>(a[i].aux) + b * 8;
        const __m128i M = _mm_madd_epi16(mins, _mm_loadu_si128(reinterpret_cast<const __m128i*>(bs)));
        const float da = a[i].d[b];
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(T[i]), _mm256_set1_ps(d * da), acc[i]);
        accm[i] = _mm_fmadd_ps(_mm_cvtepi32_ps(M), _mm_set1_ps(dmin * da), accm[i]);
      }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
      __m128 m = accm[i];
      m = _mm_add_ps(m, _mm_movehl_ps(m, m));
      m = _mm_add_ss(m, _mm_movehdup_ps(m));
      y[i][r] = hsum8(acc[i]) - _mm_cvtss_f32(m);
    }
  }
}

// Q6_K half-block (128 codes, 0..63) → 4 vectors of 32 codes in natural order.
inline void q6k_codes_half(const uint8_t* ql, const uint8_t* qh, __m256i* W) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
  const __m256i L0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
  const __m256i L1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
  const __m256i H = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
  W[0] = _mm256_or_si256(_mm256_and_si256(L0, m4), _mm256_and_si256(_mm256_slli_epi16(H, 4), m30));
  W[1] = _mm256_or_si256(_mm256_and_si256(L1, m4), _mm256_and_si256(_mm256_slli_epi16(H, 2), m30));
  W[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4), _mm256_and_si256(H, m30));
  W[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4),
                         _mm256_and_si256(_mm256_srli_epi16(H, 2), m30));
}

template <int NA>
void qgemv_q6_k(const uint8_t* wb, size_t rb, int64_t nb, const QRow* a, int64_t r0, int64_t r1, float* const* y) {
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ6_K*>(wb + r * rb);
    __m256 acc[NA];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      const int8_t* sc = w[b].scales;
      const __m256i sc32a = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc)));
      const __m256i sc32b = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sc + 8)));
      __m256i T[NA];
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
        const auto* corr = static_cast<const int32_t*>(a[i].aux) + b * 16;
        T[i] = _mm256_add_epi32(
            _mm256_mullo_epi32(sc32a, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr))),
            _mm256_mullo_epi32(sc32b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(corr + 8))));
      }
      _Pragma("GCC unroll 16") for (int h = 0; h < 2; ++h) {
        __m256i W[4];
        q6k_codes_half(w[b].ql + 64 * h, w[b].qh + 32 * h, W);
        _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j) {
          // 32 codes = sub-blocks 8h+2j, 8h+2j+1: scales in the two 128-bit halves.
          const __m256i s = _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_set1_epi16(sc[8 * h + 2 * j])),
                                                    _mm_set1_epi16(sc[8 * h + 2 * j + 1]), 1);
          _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
            const int8_t* q = a[i].qs + b * 256 + 128 * h + 32 * j;
            const __m256i p = _mm256_maddubs_epi16(W[j], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q)));
            T[i] = _mm256_add_epi32(T[i], _mm256_madd_epi16(p, s));
          }
        }
      }
      const float d = h2f(w[b].d);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i)
        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(T[i]), _mm256_set1_ps(d * a[i].d[b]), acc[i]);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) y[i][r] = hsum8(acc[i]);
  }
}

template <int NA>
void qgemv_n(const WeightView& w, const uint8_t* acts, const ActLayout& L, int64_t i0, int64_t r0, int64_t r1,
             float* y, int64_t ldy) {
  QRow a[NA];
  float* yr[NA];
  _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
    a[i] = qrow(acts, L, i0 + i);
    yr[i] = y + (i0 + i) * ldy;
  }
  const size_t rb = row_bytes(w.type, w.cols);
  const auto* wb = static_cast<const uint8_t*>(w.data);
  switch (w.type) {
    case DType::Q8_0: qgemv_q8_0<NA>(wb, rb, w.cols / 32, a, r0, r1, yr); break;
    case DType::Q4_0: qgemv_q4_0<NA>(wb, rb, w.cols / 32, a, r0, r1, yr); break;
    case DType::Q4_K: qgemv_q4_k<NA>(wb, rb, w.cols / 256, a, r0, r1, yr); break;
    case DType::Q6_K: qgemv_q6_k<NA>(wb, rb, w.cols / 256, a, r0, r1, yr); break;
    default: break;
  }
}

void qgemv(const WeightView& w, const uint8_t* acts, const ActLayout& L, int64_t m, int64_t r0, int64_t r1, float* y,
           int64_t ldy) {
  for (int64_t rb = r0; rb < r1; rb += 16) {
    const int64_t re = std::min(r1, rb + 16);
    int64_t i = 0;
    for (; i + 4 <= m; i += 4) qgemv_n<4>(w, acts, L, i, rb, re, y, ldy);
    switch (m - i) {
      case 3: qgemv_n<3>(w, acts, L, i, rb, re, y, ldy); break;
      case 2: qgemv_n<2>(w, acts, L, i, rb, re, y, ldy); break;
      case 1: qgemv_n<1>(w, acts, L, i, rb, re, y, ldy); break;
      default: break;
    }
  }
}

template <int NA>
void fgemv_n(DType bt, const float* const* ar, const void* b, size_t brb, float* const* cr, int64_t j0, int64_t j1,
             int64_t k, bool accumulate) {
  const size_t es = esize(bt);
  for (int64_t j = j0; j < j1; ++j) {
    const auto* br = static_cast<const uint8_t*>(b) + j * brb;
    __m256 acc[NA][4];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i)
      _Pragma("GCC unroll 16") for (int u = 0; u < 4; ++u) acc[i][u] = _mm256_setzero_ps();
    int64_t t = 0;
    for (; t + 32 <= k; t += 32) {
      __m256 wv[4];
      _Pragma("GCC unroll 16") for (int u = 0; u < 4; ++u) wv[u] = ld_w(bt, br + (t + 8 * u) * es);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i)
        _Pragma("GCC unroll 16") for (int u = 0; u < 4; ++u) acc[i][u] = _mm256_fmadd_ps(_mm256_loadu_ps(ar[i] + t + 8 * u), wv[u], acc[i][u]);
    }
    for (; t + 8 <= k; t += 8) {
      const __m256 wv = ld_w(bt, br + t * es);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i][0] = _mm256_fmadd_ps(_mm256_loadu_ps(ar[i] + t), wv, acc[i][0]);
    }
    if (t < k) {
      const int n = static_cast<int>(k - t);
      const __m256 wv = ld_w_part(bt, br + t * es, n);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i][1] = _mm256_fmadd_ps(ld_f_part(ar[i] + t, n), wv, acc[i][1]);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
      const float s =
          hsum8(_mm256_add_ps(_mm256_add_ps(acc[i][0], acc[i][2]), _mm256_add_ps(acc[i][1], acc[i][3])));
      cr[i][j] = accumulate ? cr[i][j] + s : s;
    }
  }
}

void fgemv(DType bt, const float* a, int64_t lda, const void* b, int64_t ldb, float* c, int64_t ldc, int64_t m,
           int64_t j0, int64_t j1, int64_t k, bool accumulate) {
  const size_t brb = static_cast<size_t>(ldb) * esize(bt);
  for (int64_t jb = j0; jb < j1; jb += 16) {
    const int64_t je = std::min(j1, jb + 16);
    int64_t i = 0;
    auto run = [&](auto na_tag) {
      constexpr int NA = decltype(na_tag)::value;
      const float* ar[NA];
      float* cr[NA];
      _Pragma("GCC unroll 16") for (int u = 0; u < NA; ++u) {
        ar[u] = a + (i + u) * lda;
        cr[u] = c + (i + u) * ldc;
      }
      fgemv_n<NA>(bt, ar, b, brb, cr, jb, je, k, accumulate);
    };
    for (; i + 4 <= m; i += 4) run(std::integral_constant<int, 4>{});
    switch (m - i) {
      case 3: run(std::integral_constant<int, 3>{}); break;
      case 2: run(std::integral_constant<int, 2>{}); break;
      case 1: run(std::integral_constant<int, 1>{}); break;
      default: break;
    }
  }
}

// ============================================================ packed path

inline void transpose8(__m256i* r) {
  __m256i t[8];
  _Pragma("GCC unroll 16") for (int i = 0; i < 4; ++i) {
    t[2 * i] = _mm256_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm256_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  __m256i u[8];
  _Pragma("GCC unroll 16") for (int i = 0; i < 2; ++i) {
    u[4 * i] = _mm256_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 1] = _mm256_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    u[4 * i + 2] = _mm256_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    u[4 * i + 3] = _mm256_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  // u[4i + e], 128-bit half c: column 4c + e of rows 4i..4i+3
  _Pragma("GCC unroll 16") for (int e = 0; e < 4; ++e) {
    r[e] = _mm256_permute2x128_si256(u[e], u[4 + e], 0x20);
    r[4 + e] = _mm256_permute2x128_si256(u[e], u[4 + e], 0x31);
  }
}

// Packed activation vector layouts (8 rows; rows past m are zero):
//   float weights: f32 [k][8]
//   quantized: codes [k/4][8], d [nd][8], then corrections [nc][8] int32
//   (Q4_0: -8*sum per 32; Q6_K: -32*sum per 16; Q8_0: none, sign trick) or
//   for Q4_K block-sum pairs [k/64][8].
struct QPackLayout {
  size_t codes = 0, d = 0, corr = 0, bytes = 0;
  int64_t nd = 0, nc = 0;
};
QPackLayout qpack_layout(DType wt, int64_t k) {
  QPackLayout P;
  P.d = static_cast<size_t>(k) / 4 * 32;
  const bool kq = wt == DType::Q4_K || wt == DType::Q6_K;
  P.nd = kq ? k / 256 : k / 32;
  P.corr = P.d + static_cast<size_t>(P.nd) * 32;
  P.nc = wt == DType::Q6_K ? k / 16 : wt == DType::Q4_K ? k / 64 : wt == DType::Q4_0 ? k / 32 : 0;
  P.bytes = P.corr + static_cast<size_t>(P.nc) * 32;
  return P;
}

size_t pack_bytes(DType wt, int64_t k) {
  if (!is_quant_type(wt)) return static_cast<size_t>(k) * 32;
  return qpack_layout(wt, k).bytes;
}

void pack_acts(DType wt, const float* x, int64_t lda, const uint8_t* qacts, const ActLayout& L, int64_t m, int64_t k,
               int64_t v, uint8_t* out) {
  const int64_t row0 = v * VL;
  const int nrows = static_cast<int>(std::min<int64_t>(VL, m - row0));
  if (!is_quant_type(wt)) {
    auto* o = reinterpret_cast<__m256i*>(out);
    for (int64_t t = 0; t < k; t += 8) {
      const int n = static_cast<int>(std::min<int64_t>(8, k - t));
      __m256i r[8];
      _Pragma("GCC unroll 16") for (int l = 0; l < 8; ++l) {
        if (l >= nrows) {
          r[l] = _mm256_setzero_si256();
        } else {
          const float* src = x + (row0 + l) * lda + t;
          r[l] = _mm256_castps_si256(n == 8 ? _mm256_loadu_ps(src) : ld_f_part(src, n));
        }
      }
      transpose8(r);
      for (int e = 0; e < n; ++e) _mm256_storeu_si256(o + t + e, r[e]);
    }
    return;
  }
  const QPackLayout P = qpack_layout(wt, k);
  QRow rows[8];
  for (int l = 0; l < nrows; ++l) rows[l] = qrow(qacts, L, row0 + l);
  auto* codes = reinterpret_cast<__m256i*>(out + P.codes);
  for (int64_t t = 0; t < k; t += 32) {  // k is a multiple of 32
    __m256i r[8];
    _Pragma("GCC unroll 16") for (int l = 0; l < 8; ++l)
      r[l] = l < nrows ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows[l].qs + t)) : _mm256_setzero_si256();
    transpose8(r);
    _Pragma("GCC unroll 16") for (int e = 0; e < 8; ++e) _mm256_storeu_si256(codes + t / 4 + e, r[e]);
  }
  auto* dd = reinterpret_cast<float*>(out + P.d);
  for (int64_t b = 0; b < P.nd; ++b)
    _Pragma("GCC unroll 16") for (int l = 0; l < 8; ++l) dd[b * 8 + l] = l < nrows ? rows[l].d[b] : 0.0f;
  auto* cc = reinterpret_cast<int32_t*>(out + P.corr);
  for (int64_t b = 0; b < P.nc; ++b)
    _Pragma("GCC unroll 16") for (int l = 0; l < 8; ++l) {
      int32_t val = 0;
      if (l < nrows) std::memcpy(&val, static_cast<const uint8_t*>(rows[l].aux) + 4 * b, 4);
      cc[b * 8 + l] = val;
    }
}

struct WTile {
  uint8_t* codes;  // [MR][KC] u8 (Q4_0/Q4_K/Q6_K) or s8 (Q8_0); f32 [MR][KCF] for float weights
  float* scale;    // [MR][KC/16]
  int32_t* mins;   // [MR][KC/64]
  float* dmin;     // [MR][KC/256]
};

constexpr int64_t KCQ = 1024;
constexpr int64_t KCF = 256;
constexpr int MRQ = 2;
constexpr int MRF = 6;

size_t wtile_bytes() {
  const size_t q = static_cast<size_t>(MRQ) * (KCQ + KCQ / 16 * 4 + KCQ / 64 * 4 + KCQ / 256 * 4);
  const size_t f = static_cast<size_t>(MRF) * KCF * 4;
  return std::max(q, f) + 256;
}

void decode_quant_row(DType wt, const uint8_t* row, int64_t k0, int64_t kc, uint8_t* codes, float* scale,
                      int32_t* mins, float* dmin) {
  const __m256i m4 = _mm256_set1_epi8(0x0f);
  switch (wt) {
    case DType::Q8_0: {
      const auto* w = reinterpret_cast<const BlockQ8_0*>(row) + k0 / 32;
      for (int64_t b = 0; b < kc / 32; ++b) {
        std::memcpy(codes + 32 * b, w[b].qs, 32);
        scale[b] = h2f(w[b].d);
      }
      return;
    }
    case DType::Q4_0: {
      const auto* w = reinterpret_cast<const BlockQ4_0*>(row) + k0 / 32;
      for (int64_t b = 0; b < kc / 32; ++b) {
        const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs));
        const __m256i z = _mm256_inserti128_si256(_mm256_castsi128_si256(q), _mm_srli_epi16(q, 4), 1);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 32 * b), _mm256_and_si256(z, m4));
        scale[b] = h2f(w[b].d);
      }
      return;
    }
    case DType::Q4_K: {
      const auto* w = reinterpret_cast<const BlockQ4_K*>(row) + k0 / 256;
      for (int64_t b = 0; b < kc / 256; ++b) {
        _Pragma("GCC unroll 16") for (int c = 0; c < 4; ++c) {
          const __m256i L = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs + 32 * c));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 256 * b + 64 * c), _mm256_and_si256(L, m4));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 256 * b + 64 * c + 32),
                              _mm256_and_si256(_mm256_srli_epi16(L, 4), m4));
        }
        alignas(16) uint8_t sm[16];
        q4k_scales(w[b].scales, sm);
        const float d = h2f(w[b].d);
        _Pragma("GCC unroll 16") for (int j = 0; j < 8; ++j) scale[8 * b + j] = d * sm[j];
        _Pragma("GCC unroll 16") for (int p = 0; p < 4; ++p) mins[4 * b + p] = sm[8 + 2 * p] | (sm[9 + 2 * p] << 16);
        dmin[b] = h2f(w[b].dmin);
      }
      return;
    }
    case DType::Q6_K: {
      const auto* w = reinterpret_cast<const BlockQ6_K*>(row) + k0 / 256;
      for (int64_t b = 0; b < kc / 256; ++b) {
        _Pragma("GCC unroll 16") for (int h = 0; h < 2; ++h) {
          __m256i W[4];
          q6k_codes_half(w[b].ql + 64 * h, w[b].qh + 32 * h, W);
          _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j)
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 256 * b + 128 * h + 32 * j), W[j]);
        }
        const float d = h2f(w[b].d);
        _Pragma("GCC unroll 16") for (int j = 0; j < 16; ++j) scale[16 * b + j] = d * w[b].scales[j];
      }
      return;
    }
    default: return;
  }
}

inline int32_t wdword(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Q8_0 / Q4_0 micro-kernel. Q8_0 codes are s8 (sign trick), Q4_0 codes u8
// with the -8*sum correction from the activation side.
template <int MR, int NV, bool Q8>
inline void qk_blocks32(const WTile& W, int64_t kc, const uint8_t* const* av, const QPackLayout& P, int64_t k0,
                        float* ct, int64_t ldct) {
  constexpr int64_t nS = KCQ / 16;
  __m256 facc[MR][NV];
  _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) facc[r][v] = _mm256_setzero_ps();
  for (int64_t g = 0; g < kc / 32; ++g) {
    const int64_t gb = k0 / 32 + g;
    __m256i iacc[MR][NV];
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
      const __m256i c = Q8 ? _mm256_setzero_si256()
                           : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(av[v] + P.corr + gb * 32));
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) iacc[r][v] = c;
    }
    __m256i acc16[MR][NV];
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc16[r][v] = _mm256_setzero_si256();
    _Pragma("GCC unroll 8") for (int s = 0; s < 8; ++s) {
      __m256i A[NV];
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) A[v] =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(av[v] + P.codes + (gb * 8 + s) * 32));
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
        const __m256i wb = _mm256_set1_epi32(wdword(W.codes + r * KCQ + g * 32 + 4 * s));
        if (Q8) {
          const __m256i aw = _mm256_sign_epi8(wb, wb);
          _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) iacc[r][v] =
              _mm256_add_epi32(iacc[r][v], dot4(aw, _mm256_sign_epi8(A[v], wb)));
        } else {
          // Nibbles (<= 15) x codes (|a| <= 127): a pair sums to <= 3810, so
          // 8 steps fit in int16 before widening.
          _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc16[r][v] =
              _mm256_add_epi16(acc16[r][v], _mm256_maddubs_epi16(wb, A[v]));
        }
      }
    }
    if (!Q8) {
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)
          iacc[r][v] = _mm256_add_epi32(iacc[r][v], _mm256_madd_epi16(acc16[r][v], _mm256_set1_epi16(1)));
    }
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
      const __m256 D = _mm256_loadu_ps(reinterpret_cast<const float*>(av[v] + P.d) + gb * 8);
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) facc[r][v] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][v]), _mm256_mul_ps(D, _mm256_set1_ps(W.scale[r * nS + g])),
                          facc[r][v]);
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
    float* p = ct + r * ldct + v * 8;
    _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), facc[r][v]));
  }
}

template <int MR, int NV>
inline void qk_q4k(const WTile& W, int64_t kc, const uint8_t* const* av, const QPackLayout& P, int64_t k0, float* ct,
                   int64_t ldct) {
  constexpr int64_t nS = KCQ / 16, nM = KCQ / 64, nB = KCQ / 256;
  for (int64_t sb = 0; sb < kc / 256; ++sb) {
    const int64_t gsb = k0 / 256 + sb;
    __m256 fsb[MR][NV];
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) fsb[r][v] = _mm256_setzero_ps();
    _Pragma("GCC unroll 16") for (int j = 0; j < 8; ++j) {
      __m256i iacc[MR][NV];
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
          _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) iacc[r][v] = _mm256_setzero_si256();
      const int64_t kq = (gsb * 256 + 32 * j) / 4;
      _Pragma("GCC unroll 8") for (int s = 0; s < 8; ++s) {
        __m256i A[NV];
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) A[v] =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(av[v] + P.codes + (kq + s) * 32));
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
          const __m256i wb = _mm256_set1_epi32(wdword(W.codes + r * KCQ + sb * 256 + 32 * j + 4 * s));
          // codes <= 15: 8 steps fit in int16 (see qk_blocks32)
          _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) iacc[r][v] =
              _mm256_add_epi16(iacc[r][v], _mm256_maddubs_epi16(wb, A[v]));
        }
      }
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)
          iacc[r][v] = _mm256_madd_epi16(iacc[r][v], _mm256_set1_epi16(1));
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
        const __m256 sc = _mm256_set1_ps(W.scale[r * nS + sb * 8 + j]);
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) fsb[r][v] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][v]), sc, fsb[r][v]);
      }
    }
    __m256i macc[MR][NV];
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) macc[r][v] = _mm256_setzero_si256();
    _Pragma("GCC unroll 4") for (int p = 0; p < 4; ++p) {
      __m256i B[NV];
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) B[v] =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(av[v] + P.corr + (gsb * 4 + p) * 32));
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
        const __m256i mp = _mm256_set1_epi32(W.mins[r * nM + sb * 4 + p]);
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) macc[r][v] =
            _mm256_add_epi32(macc[r][v], _mm256_madd_epi16(B[v], mp));
      }
    }
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
      const __m256 D = _mm256_loadu_ps(reinterpret_cast<const float*>(av[v] + P.d) + gsb * 8);
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
        const __m256 f = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(macc[r][v]), _mm256_set1_ps(W.dmin[r * nB + sb]),
                                          fsb[r][v]);
        float* p = ct + r * ldct + v * 8;
        _mm256_storeu_ps(p, _mm256_fmadd_ps(f, D, _mm256_loadu_ps(p)));
      }
    }
  }
}

template <int MR, int NV>
inline void qk_q6k(const WTile& W, int64_t kc, const uint8_t* const* av, const QPackLayout& P, int64_t k0, float* ct,
                   int64_t ldct) {
  constexpr int64_t nS = KCQ / 16;
  for (int64_t sb = 0; sb < kc / 256; ++sb) {
    const int64_t gsb = k0 / 256 + sb;
    __m256 fsb[MR][NV];
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) fsb[r][v] = _mm256_setzero_ps();
    _Pragma("GCC unroll 16") for (int j = 0; j < 16; ++j) {
      __m256i iacc[MR][NV];
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(av[v] + P.corr + (gsb * 16 + j) * 32));
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) iacc[r][v] = c;
      }
      const int64_t kq = (gsb * 256 + 16 * j) / 4;
      // Codes <= 63: a maddubs pair sums to <= 16002, so two steps fit in int16.
      _Pragma("GCC unroll 2") for (int s2 = 0; s2 < 4; s2 += 2) {
        __m256i p16[MR][NV];
        _Pragma("GCC unroll 2") for (int s = s2; s < s2 + 2; ++s) {
          __m256i A[NV];
          _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) A[v] =
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(av[v] + P.codes + (kq + s) * 32));
          _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
            const __m256i wb = _mm256_set1_epi32(wdword(W.codes + r * KCQ + sb * 256 + 16 * j + 4 * s));
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
              const __m256i p = _mm256_maddubs_epi16(wb, A[v]);
              p16[r][v] = s == s2 ? p : _mm256_add_epi16(p16[r][v], p);
            }
          }
        }
        _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v)
            iacc[r][v] = _mm256_add_epi32(iacc[r][v], _mm256_madd_epi16(p16[r][v], _mm256_set1_epi16(1)));
      }
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
        const __m256 sc = _mm256_set1_ps(W.scale[r * nS + sb * 16 + j]);
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) fsb[r][v] =
            _mm256_fmadd_ps(_mm256_cvtepi32_ps(iacc[r][v]), sc, fsb[r][v]);
      }
    }
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
      const __m256 D = _mm256_loadu_ps(reinterpret_cast<const float*>(av[v] + P.d) + gsb * 8);
      _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
        float* p = ct + r * ldct + v * 8;
        _mm256_storeu_ps(p, _mm256_fmadd_ps(fsb[r][v], D, _mm256_loadu_ps(p)));
      }
    }
  }
}

// first: the tile has no partial sums yet (store instead of add).
template <int MR, int NV>
inline void fk_f32(const float* wt, int64_t kc, const uint8_t* const* av, int64_t k0, float* ct, int64_t ldct,
                   bool first) {
  __m256 acc[MR][NV];
  _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r)
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_setzero_ps();
  const float* a[NV];
  _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) a[v] = reinterpret_cast<const float*>(av[v]) + k0 * 8;
  for (int64_t t = 0; t < kc; ++t) {
    __m256 A[NV];
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) A[v] = _mm256_loadu_ps(a[v] + t * 8);
    _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) {
      const __m256 wb = _mm256_broadcast_ss(wt + r * KCF + t);
      _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) acc[r][v] = _mm256_fmadd_ps(A[v], wb, acc[r][v]);
    }
  }
  _Pragma("GCC unroll 8") for (int r = 0; r < MR; ++r) _Pragma("GCC unroll 8") for (int v = 0; v < NV; ++v) {
    float* p = ct + r * ldct + v * 8;
    _mm256_storeu_ps(p, first ? acc[r][v] : _mm256_add_ps(_mm256_loadu_ps(p), acc[r][v]));
  }
}

thread_local Scratch t_tile;
thread_local Scratch t_wtile;

void gemm_packed(DType wt, const void* w, size_t w_row_bytes, int64_t k, const uint8_t* packed, size_t vec_bytes,
                 int64_t v0, int64_t v1, int64_t m, int64_t j0, int64_t j1, float* c, int64_t ldc, bool accumulate) {
  const bool quant = is_quant_type(wt);
  const int MR = quant ? MRQ : MRF;
  const int64_t nv = v1 - v0, rows = j1 - j0;
  const int64_t rows_p = (rows + MR - 1) / MR * MR;
  const int64_t ldct = nv * VL;
  float* ct = reinterpret_cast<float*>(t_tile.get(static_cast<size_t>(rows_p * ldct) * 4));
  // The quantized kernels accumulate into the tile; the float one stores on
  // the first k-chunk.
  if (quant) std::memset(ct, 0, static_cast<size_t>(rows_p * ldct) * 4);
  uint8_t* wbuf = t_wtile.get(wtile_bytes());
  const auto* wbase = static_cast<const uint8_t*>(w);

  if (quant) {
    const QPackLayout P = qpack_layout(wt, k);
    WTile T;
    T.codes = wbuf;
    T.scale = reinterpret_cast<float*>(wbuf + MRQ * KCQ);
    T.mins = reinterpret_cast<int32_t*>(T.scale + MRQ * (KCQ / 16));
    T.dmin = reinterpret_cast<float*>(T.mins + MRQ * (KCQ / 64));
    for (int64_t k0 = 0; k0 < k; k0 += KCQ) {
      const int64_t kc = std::min(KCQ, k - k0);
      for (int64_t rg = 0; rg < rows; rg += MRQ) {
        _Pragma("GCC unroll 16") for (int r = 0; r < MRQ; ++r) {
          const int64_t j = j0 + rg + r;
          if (j < j1) {
            decode_quant_row(wt, wbase + j * w_row_bytes, k0, kc, T.codes + r * KCQ, T.scale + r * (KCQ / 16),
                             T.mins + r * (KCQ / 64), T.dmin + r * (KCQ / 256));
          } else {
            std::memset(T.codes + r * KCQ, 0, KCQ);
            std::memset(T.scale + r * (KCQ / 16), 0, KCQ / 16 * 4);
            std::memset(T.mins + r * (KCQ / 64), 0, KCQ / 64 * 4);
            std::memset(T.dmin + r * (KCQ / 256), 0, KCQ / 256 * 4);
          }
        }
        float* ctr = ct + rg * ldct;
        int64_t v = 0;
        auto run = [&](auto nv_tag) {
          constexpr int NV = decltype(nv_tag)::value;
          const uint8_t* a[NV];
          _Pragma("GCC unroll 16") for (int u = 0; u < NV; ++u) a[u] = packed + (v0 + v + u) * vec_bytes;
          float* cp = ctr + v * VL;
          switch (wt) {
            case DType::Q4_K: qk_q4k<MRQ, NV>(T, kc, a, P, k0, cp, ldct); break;
            case DType::Q6_K: qk_q6k<MRQ, NV>(T, kc, a, P, k0, cp, ldct); break;
            case DType::Q8_0: qk_blocks32<MRQ, NV, true>(T, kc, a, P, k0, cp, ldct); break;
            default: qk_blocks32<MRQ, NV, false>(T, kc, a, P, k0, cp, ldct); break;
          }
        };
        for (; v + 2 <= nv; v += 2) run(std::integral_constant<int, 2>{});
        if (v < nv) run(std::integral_constant<int, 1>{});
      }
    }
  } else {
    for (int64_t k0 = 0; k0 < k; k0 += KCF) {
      const int64_t kc = std::min(KCF, k - k0);
      for (int64_t rg = 0; rg < rows; rg += MRF) {
        _Pragma("GCC unroll 16") for (int r = 0; r < MRF; ++r) {
          const int64_t j = j0 + rg + r;
          float* dst = reinterpret_cast<float*>(wbuf) + r * KCF;
          if (j < j1) {
            const uint8_t* src = wbase + j * w_row_bytes + k0 * esize(wt);
            int64_t t = 0;
            for (; t + 8 <= kc; t += 8) _mm256_storeu_ps(dst + t, ld_w(wt, src + t * esize(wt)));
            if (t < kc) _mm256_storeu_ps(dst + t, ld_w_part(wt, src + t * esize(wt), static_cast<int>(kc - t)));
          } else {
            std::memset(dst, 0, KCF * 4);
          }
        }
        float* ctr = ct + rg * ldct;
        int64_t v = 0;
        auto run = [&](auto nv_tag) {
          constexpr int NV = decltype(nv_tag)::value;
          const uint8_t* a[NV];
          _Pragma("GCC unroll 16") for (int u = 0; u < NV; ++u) a[u] = packed + (v0 + v + u) * vec_bytes;
          fk_f32<MRF, NV>(reinterpret_cast<const float*>(wbuf), kc, a, k0, ctr + v * VL, ldct, k0 == 0);
        };
        for (; v + 2 <= nv; v += 2) run(std::integral_constant<int, 2>{});
        if (v < nv) run(std::integral_constant<int, 1>{});
      }
    }
  }

  // Write the transposed tile out, 8x8 blocks at a time.
  const int64_t i0 = v0 * VL, i1 = std::min(m, v1 * VL);
  for (int64_t ib = i0; ib < i1; ib += 8) {
    const int64_t ni = std::min<int64_t>(8, i1 - ib);
    for (int64_t rb = 0; rb < rows; rb += 8) {
      const int64_t nr = std::min<int64_t>(8, rows - rb);
      __m256i t[8];
      _Pragma("GCC unroll 8") for (int q = 0; q < 8; ++q) t[q] =
          q < nr ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ct + (rb + q) * ldct + (ib - i0)))
                 : _mm256_setzero_si256();
      transpose8(t);
      for (int64_t e = 0; e < ni; ++e) {
        float* dst = c + (ib + e) * ldc + j0 + rb;
        alignas(32) float tmp[8];
        _mm256_store_ps(tmp, _mm256_castsi256_ps(t[e]));
        if (nr == 8) {
          __m256 v = _mm256_castsi256_ps(t[e]);
          if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(dst));
          _mm256_storeu_ps(dst, v);
        } else if (accumulate) {
          for (int64_t q = 0; q < nr; ++q) dst[q] += tmp[q];
        } else {
          for (int64_t q = 0; q < nr; ++q) dst[q] = tmp[q];
        }
      }
    }
  }
}

}  // namespace

const Isa* avx2_isa() {
  static const Isa isa = {
      "avx2", quantize_act_row, qgemv, fgemv, VL, pack_bytes, pack_acts, gemm_packed,
      /*qgemm_min_m=*/24, /*fgemm_min_m=*/8,
  };
  return &isa;
}

}  // namespace sg::kern
