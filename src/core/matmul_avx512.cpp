// AVX-512 kernels (F/BW/VL/DQ + VNNI; BF16 dot products when the CPU has
// AVX512_BF16). Built with -mavx512* flags; only called after CPUID says so.
//
// Few activation rows (decode): row-dot kernels. Each weight row is decoded
// once and dotted with up to 4 activation rows; per-block integer sums of 16
// blocks are reduced into one vector so the block scales are applied 16 at
// a time.
//
// Many activation rows (prefill, vision encoder): the activation rows are
// packed once per call into vectors of 16 rows, transposed so that lane l of
// a vector walks along row l. The kernel broadcasts one weight value (or a
// dword of 4 int8 codes / 2 bf16) and updates 16 outputs per instruction with
// vfmadd / vpdpbusd / vdpbf16ps, for a register tile of weight rows x
// activation vectors. Weights are only decoded (nibbles to bytes, f16 to
// f32) per tile, never transposed; the transposed result tile is written out
// at the end of a task.
// GCC 12's AVX-512 headers trip -Wuninitialized (_mm512_undefined_*).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "core/cpu.h"
#include "core/matmul_kernels.h"
#include "core/quant.h"

namespace sg::kern {
namespace {

constexpr int VL = 16;  // lanes (activation rows) per vector

inline float h2f(uint16_t h) { return _cvtsh_ss(h); }

inline __m512 ld_f32(const float* p) { return _mm512_loadu_ps(p); }

// Loads 16 weights of type bt as floats.
inline __m512 ld_w(DType bt, const void* p) {
  switch (bt) {
    case DType::F16: return _mm512_cvtph_ps(_mm256_loadu_si256(static_cast<const __m256i*>(p)));
    case DType::BF16:
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(static_cast<const __m256i*>(p))), 16));
    default: return _mm512_loadu_ps(static_cast<const float*>(p));
  }
}
inline __m512 ld_w_mask(DType bt, const void* p, __mmask16 m) {
  switch (bt) {
    case DType::F16: return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
    case DType::BF16:
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p)), 16));
    default: return _mm512_maskz_loadu_ps(m, p);
  }
}
inline size_t esize(DType bt) { return bt == DType::F32 ? 4 : 2; }

// ============================================================ activations

// Storage order of the eight 32-code sub-blocks of a Q4_K super-block in this
// path's quantized activations: the order in which a 64-byte load of Q4_K
// nibbles yields them (low nibbles of bytes 0-63 are sub-blocks 0 and 2, the
// high nibbles 1 and 3), so the weights need no cross-lane shuffle. Sub-block
// s is stored at position kQ4KOrder[s] (the permutation is its own inverse).
// Block sums (aux) are then in storage order too; the kernels permute the
// weight scales and mins to match.
constexpr int kQ4KOrder[8] = {0, 2, 1, 3, 4, 6, 5, 7};

void quantize_act_row(DType wt, const float* x, int64_t k, int8_t* qs, float* d) {
  const __m512 sign = _mm512_set1_ps(-0.0f);
  if (wt == DType::Q4_K || wt == DType::Q6_K) {
    for (int64_t b = 0; b < k / 256; ++b) {
      const float* xb = x + b * 256;
      __m512 vmax = _mm512_setzero_ps();
      _Pragma("GCC unroll 16") for (int j = 0; j < 16; ++j) vmax = _mm512_max_ps(vmax, _mm512_andnot_ps(sign, ld_f32(xb + 16 * j)));
      const float amax = _mm512_reduce_max_ps(vmax);
      if (amax == 0) {
        d[b] = 0;
        std::memset(qs + b * 256, 0, 256);
        continue;
      }
      // The first element of largest magnitude gives the sign (as the scalar path).
      float vm = 0;
      const __m512 va = _mm512_set1_ps(amax);
      _Pragma("GCC unroll 16") for (int j = 0; j < 16; ++j) {
        const __mmask16 mk = _mm512_cmp_ps_mask(_mm512_andnot_ps(sign, ld_f32(xb + 16 * j)), va, _CMP_EQ_OQ);
        if (mk) {
          vm = xb[16 * j + __builtin_ctz(mk)];
          break;
        }
      }
      const float iscale = -127.0f / vm;
      const __m512 vs = _mm512_set1_ps(iscale);
      const __m512i lim = _mm512_set1_epi32(127);
      _Pragma("GCC unroll 16") for (int j = 0; j < 16; ++j) {
        __m512i q = _mm512_cvtps_epi32(_mm512_mul_ps(ld_f32(xb + 16 * j), vs));
        q = _mm512_min_epi32(q, lim);
        // Q4_K: sub-block (32 codes) s is stored at position kQ4KOrder[s].
        const int pos = wt == DType::Q4_K ? 32 * kQ4KOrder[j / 2] + 16 * (j & 1) : 16 * j;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + b * 256 + pos), _mm512_cvtsepi32_epi8(q));
      }
      d[b] = 1.0f / iscale;
    }
    return;
  }
  for (int64_t b = 0; b < k / 32; ++b) {
    const __m512 v0 = ld_f32(x + 32 * b), v1 = ld_f32(x + 32 * b + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_andnot_ps(sign, v0), _mm512_andnot_ps(sign, v1)));
    const float db = amax / 127.0f;
    const float id = db != 0 ? 1.0f / db : 0.0f;
    const __m512 vi = _mm512_set1_ps(id);
    const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, vi));
    const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, vi));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b), _mm512_cvtsepi32_epi8(q0));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(qs + 32 * b + 16), _mm512_cvtsepi32_epi8(q1));
    d[b] = db;
  }
}

// ============================================================ row-dot kernels

// P[i] holds lanes 0-7 of block 2i and lanes 8-15 of block 2i+1; returns the
// 16 block sums in the lane order kPerm.
alignas(64) const int32_t kPerm[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};

inline __m512i reduce_pairs(const __m512i* P) {
  const __m512i q0 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[0], P[1]), _mm512_unpackhi_epi32(P[0], P[1]));
  const __m512i q1 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[2], P[3]), _mm512_unpackhi_epi32(P[2], P[3]));
  const __m512i q2 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[4], P[5]), _mm512_unpackhi_epi32(P[4], P[5]));
  const __m512i q3 = _mm512_add_epi32(_mm512_unpacklo_epi32(P[6], P[7]), _mm512_unpackhi_epi32(P[6], P[7]));
  const __m512i s0 = _mm512_add_epi32(_mm512_unpacklo_epi64(q0, q1), _mm512_unpackhi_epi64(q0, q1));
  const __m512i s1 = _mm512_add_epi32(_mm512_unpacklo_epi64(q2, q3), _mm512_unpackhi_epi64(q2, q3));
  return _mm512_add_epi32(_mm512_shuffle_i32x4(s0, s1, 0x88), _mm512_shuffle_i32x4(s0, s1, 0xDD));
}

// The f16 scales of 16 blocks (block stride given by idx, in kPerm order) as
// floats; blocks at or past nv read as 0. A gather avoids the store-forwarding
// stall of assembling the 16 halves through memory.
inline __m512 gather_scales(const uint16_t* d0, __m512i idx, int64_t nv) {
  const __mmask16 valid =
      nv >= 16 ? static_cast<__mmask16>(0xffff)
               : _mm512_cmplt_epi32_mask(_mm512_load_si512(kPerm), _mm512_set1_epi32(static_cast<int>(nv)));
  const __m512i raw = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, idx, d0, 1);
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(raw));
}

template <int NA>
void qgemv_q8_0(const uint8_t* wb, size_t rb, int64_t nb, const QRow* a, int64_t r0, int64_t r1, float* const* y) {
  const __m512i perm = _mm512_load_si512(kPerm);
  const __m512i idx_d = _mm512_mullo_epi32(perm, _mm512_set1_epi32(sizeof(BlockQ8_0)));
  const __m512i x80 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ8_0*>(wb + r * rb);
    __m512 acc[NA];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < nb; g += 16) {
      const int64_t nv = std::min<int64_t>(16, nb - g);
      __m512i W[8];
      if (nv == 16) {
        _Pragma("GCC unroll 16") for (int i = 0; i < 8; ++i) {
          // [qs(2i) | qs(2i+1)]: a load and a masked broadcast (a blend, not a cross-lane shuffle)
          const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[g + 2 * i].qs));
          const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[g + 2 * i + 1].qs));
          W[i] = _mm512_xor_si512(_mm512_mask_broadcast_i64x4(_mm512_castsi256_si512(lo), 0xf0, hi), x80);
        }
      } else {
        _Pragma("GCC unroll 16") for (int i = 0; i < 8; ++i) {
          const __m256i lo = 2 * i < nv ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[g + 2 * i].qs))
                                        : _mm256_setzero_si256();
          const __m256i hi = 2 * i + 1 < nv
                                 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[g + 2 * i + 1].qs))
                                 : _mm256_setzero_si256();
          W[i] = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), x80);
        }
      }
      const __m512 dw = gather_scales(&w[g].d, idx_d, nv);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
        __m512i P[8];
        const int8_t* q = a[i].qs + g * 32;
        _Pragma("GCC unroll 16") for (int j = 0; j < 8; ++j)
          P[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[j], _mm512_loadu_si512(q + 64 * j));
        __m512i s = reduce_pairs(P);
        const auto* corr = static_cast<const int32_t*>(a[i].aux) + g;
        s = _mm512_add_epi32(s, _mm512_permutexvar_epi32(perm, _mm512_loadu_si512(corr)));
        const __m512 da = _mm512_permutexvar_ps(perm, _mm512_loadu_ps(a[i].d + g));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, da), acc[i]);
      }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) y[i][r] = _mm512_reduce_add_ps(acc[i]);
  }
}

// The 16 f16 scales of a group of 16 Q4_0 blocks (18 bytes = 9 words each)
// in kPerm order, by two word permutes over four loads; blocks at or past nv
// read as 0 (their bytes are not touched).
inline __m512 q4_0_scales(const uint8_t* base, int64_t nv) {
  const __m512i idx = _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                       63, 45, 27, 9, 54, 36, 18, 0);
  __m512i A, B, C, D;
  __mmask16 valid = 0xffff;
  if (nv >= 16) {
    A = _mm512_loadu_si512(base);
    B = _mm512_loadu_si512(base + 64);
    C = _mm512_loadu_si512(base + 144);
    D = _mm512_loadu_si512(base + 208);
  } else {
    const int64_t n = nv * 18;  // readable bytes
    auto mk = [&](int64_t off) {
      const int64_t r = n - off;
      return r >= 64 ? ~__mmask64{0} : r <= 0 ? __mmask64{0} : (__mmask64{1} << r) - 1;
    };
    A = _mm512_maskz_loadu_epi8(mk(0), base);
    B = _mm512_maskz_loadu_epi8(mk(64), base + 64);
    C = _mm512_maskz_loadu_epi8(mk(144), base + 144);
    D = _mm512_maskz_loadu_epi8(mk(208), base + 208);
    valid = _mm512_cmplt_epi32_mask(_mm512_load_si512(kPerm), _mm512_set1_epi32(static_cast<int>(nv)));
  }
  const __m512i p1 = _mm512_permutex2var_epi16(A, idx, B);
  const __m512i p2 = _mm512_permutex2var_epi16(C, idx, D);
  const __m256i h = _mm256_inserti128_si256(_mm512_castsi512_si256(p1), _mm512_castsi512_si128(p2), 1);
  return _mm512_maskz_mov_ps(valid, _mm512_cvtph_ps(h));
}

template <int NA>
void qgemv_q4_0(const uint8_t* wb, size_t rb, int64_t nb, const QRow* a, int64_t r0, int64_t r1, float* const* y) {
  const __m512i perm = _mm512_load_si512(kPerm);
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  const __m512i shifts = _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ4_0*>(wb + r * rb);
    __m512 acc[NA];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t g = 0; g < nb; g += 16) {
      const int64_t nv = std::min<int64_t>(16, nb - g);
      __m512i W[8];
      _Pragma("GCC unroll 16") for (int i = 0; i < 8; ++i) {
        __m512i z;
        if (nv == 16 || 2 * i + 1 < nv) {
          // [q0, q0, q1, q1]: a broadcast and a masked broadcast (a blend, not a cross-lane shuffle)
          z = _mm512_mask_broadcast_i32x4(
              _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[g + 2 * i].qs))), 0xff00,
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[g + 2 * i + 1].qs)));
        } else if (2 * i < nv) {
          z = _mm512_maskz_broadcast_i32x4(0x00ff,
                                           _mm_loadu_si128(reinterpret_cast<const __m128i*>(w[g + 2 * i].qs)));
        } else {
          z = _mm512_setzero_si512();
        }
        W[i] = _mm512_and_si512(_mm512_srlv_epi64(z, shifts), m4);
      }
      const __m512 dw = q4_0_scales(reinterpret_cast<const uint8_t*>(&w[g]), nv);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
        __m512i P[8];
        const int8_t* q = a[i].qs + g * 32;
        _Pragma("GCC unroll 16") for (int j = 0; j < 8; ++j)
          P[j] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[j], _mm512_loadu_si512(q + 64 * j));
        __m512i s = reduce_pairs(P);
        const auto* corr = static_cast<const int32_t*>(a[i].aux) + g;
        s = _mm512_add_epi32(s, _mm512_permutexvar_epi32(perm, _mm512_loadu_si512(corr)));
        const __m512 da = _mm512_permutexvar_ps(perm, _mm512_loadu_ps(a[i].d + g));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, da), acc[i]);
      }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) y[i][r] = _mm512_reduce_add_ps(acc[i]);
  }
}

// Eight 6-bit scales and mins of a Q4_K block as bytes: [sc0..7, m0..7].
// With the 12 bytes as dwords a0, a1, a2:
//   sc0-3 = a0 & 0x3f..,  sc4-7 = (a2 & 0x0f..) | ((a0 >> 2) & 0x30..)
//   m0-3  = a1 & 0x3f..,  m4-7  = ((a2 >> 4) & 0x0f..) | ((a1 >> 2) & 0x30..)
// (reads 16 bytes: the 4 after the scales are the first codes of the block).
inline __m128i q4k_scales(const uint8_t* s) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
  const __m128i p = _mm_srlv_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(2, 1, 2, 0)), _mm_set_epi32(4, 0, 0, 0));
  const __m128i q = _mm_srli_epi32(_mm_shuffle_epi32(v, _MM_SHUFFLE(1, 1, 0, 0)), 2);
  const __m128i lo = _mm_and_si128(p, _mm_set_epi32(0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f));
  const __m128i hi = _mm_and_si128(q, _mm_set_epi32(0x30303030, 0, 0x30303030, 0));
  // lanes: [sc0-3, sc4-7, m0-3, m4-7]
  return _mm_or_si128(lo, hi);
}

// Q4_K super-block → 4 vectors of 64 codes in kQ4KOrder storage order:
// W[0] = sub-blocks 0,2; W[1] = 1,3; W[2] = 4,6; W[3] = 5,7.
inline void q4k_codes(const uint8_t* qs, __m512i* W) {
  const __m512i m4 = _mm512_set1_epi8(0x0f);
  _Pragma("GCC unroll 16") for (int h = 0; h < 2; ++h) {
    const __m512i L = _mm512_loadu_si512(qs + 64 * h);
    W[2 * h] = _mm512_and_si512(L, m4);
    W[2 * h + 1] = _mm512_and_si512(_mm512_srli_epi16(L, 4), m4);
  }
}

// Q6_K super-block → 4 vectors of 64 codes (0..63) in natural element order.
inline void q6k_codes(const uint8_t* ql, const uint8_t* qh, __m512i* W) {
  const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
  const __m512i sl = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1);
  const __m512i sr = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
  _Pragma("GCC unroll 16") for (int h = 0; h < 2; ++h) {
    const __m512i L = _mm512_loadu_si512(ql + 64 * h);
    const __m512i H = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh + 32 * h)));
    const __m512i lo = _mm512_and_si512(L, m4);
    const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(L, 4), m4);
    W[2 * h] = _mm512_or_si512(lo, _mm512_and_si512(_mm512_sllv_epi16(H, sl), m30));
    W[2 * h + 1] = _mm512_or_si512(hi, _mm512_and_si512(_mm512_srlv_epi16(H, sr), m30));
  }
}

template <int NA>
void qgemv_q4_k(const uint8_t* wb, size_t rb, int64_t nb, const QRow* a, int64_t r0, int64_t r1, float* const* y) {
  // W[j] holds stored positions 2j, 2j+1 = sub-blocks kQ4KOrder[2j], kQ4KOrder[2j+1].
  __m512i idx[4];
  _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j)
    idx[j] = _mm512_inserti64x4(_mm512_set1_epi32(kQ4KOrder[2 * j]), _mm256_set1_epi32(kQ4KOrder[2 * j + 1]), 1);
  // Mins (bytes 8-15 of the unpacked scales) in storage order, as int16.
  const __m128i mperm = _mm_setr_epi8(8, -1, 10, -1, 9, -1, 11, -1, 12, -1, 14, -1, 13, -1, 15, -1);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ4_K*>(wb + r * rb);
    __m512 acc[NA];
    __m128 accm[NA];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
      acc[i] = _mm512_setzero_ps();
      accm[i] = _mm_setzero_ps();
    }
    for (int64_t b = 0; b < nb; ++b) {
      __m512i W[4];
      q4k_codes(w[b].qs, W);
      const __m128i sm = q4k_scales(w[b].scales);
      const __m512i scv = _mm512_cvtepu8_epi32(sm);
      __m512i SC[4];
      _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j) SC[j] = _mm512_permutexvar_epi32(idx[j], scv);
      const __m128i mins = _mm_shuffle_epi8(sm, mperm);
      const float d = h2f(w[b].d), dmin = h2f(w[b].dmin);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
        const int8_t* q = a[i].qs + b * 256;
        __m512i T = _mm512_mullo_epi32(
            _mm512_dpbusd_epi32(_mm512_setzero_si512(), W[0], _mm512_loadu_si512(q)), SC[0]);
        _Pragma("GCC unroll 16") for (int j = 1; j < 4; ++j)
          T = _mm512_add_epi32(T, _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), W[j],
                                                                         _mm512_loadu_si512(q + 64 * j)),
                                                     SC[j]));
        const auto* bs = static_cast<const int16_t*>(a[i].aux) + b * 8;
        const __m128i M = _mm_madd_epi16(mins, _mm_loadu_si128(reinterpret_cast<const __m128i*>(bs)));
        const float da = a[i].d[b];
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(T), _mm512_set1_ps(d * da), acc[i]);
        accm[i] = _mm_fmadd_ps(_mm_cvtepi32_ps(M), _mm_set1_ps(dmin * da), accm[i]);
      }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
      __m128 m = accm[i];
      m = _mm_add_ps(m, _mm_movehl_ps(m, m));
      m = _mm_add_ss(m, _mm_movehdup_ps(m));
      y[i][r] = _mm512_reduce_add_ps(acc[i]) - _mm_cvtss_f32(m);
    }
  }
}

template <int NA>
void qgemv_q6_k(const uint8_t* wb, size_t rb, int64_t nb, const QRow* a, int64_t r0, int64_t r1, float* const* y) {
  __m512i idx[4];
  _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j)
    idx[j] = _mm512_set_epi32(4 * j + 3, 4 * j + 3, 4 * j + 3, 4 * j + 3, 4 * j + 2, 4 * j + 2, 4 * j + 2,
                              4 * j + 2, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j + 1, 4 * j, 4 * j, 4 * j, 4 * j);
  for (int64_t r = r0; r < r1; ++r) {
    const auto* w = reinterpret_cast<const BlockQ6_K*>(wb + r * rb);
    __m512 acc[NA];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; ++b) {
      __m512i W[4];
      q6k_codes(w[b].ql, w[b].qh, W);
      const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].scales)));
      __m512i SC[4];
      _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j) SC[j] = _mm512_permutexvar_epi32(idx[j], sc);
      const float d = h2f(w[b].d);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
        const int8_t* q = a[i].qs + b * 256;
        const auto* corr = static_cast<const int32_t*>(a[i].aux) + b * 16;
        __m512i T = _mm512_mullo_epi32(sc, _mm512_loadu_si512(corr));
        _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j)
          T = _mm512_add_epi32(T, _mm512_mullo_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), W[j],
                                                                         _mm512_loadu_si512(q + 64 * j)),
                                                     SC[j]));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(T), _mm512_set1_ps(d * a[i].d[b]), acc[i]);
      }
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) y[i][r] = _mm512_reduce_add_ps(acc[i]);
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
  // Rows in blocks of 16 so a block of weight rows stays in L1/L2 while all
  // activation rows pass over it.
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
    __m512 acc[NA][4];
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i)
      _Pragma("GCC unroll 16") for (int u = 0; u < 4; ++u) acc[i][u] = _mm512_setzero_ps();
    int64_t t = 0;
    for (; t + 64 <= k; t += 64) {
      __m512 wv[4];
      _Pragma("GCC unroll 16") for (int u = 0; u < 4; ++u) wv[u] = ld_w(bt, br + (t + 16 * u) * es);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i)
        _Pragma("GCC unroll 16") for (int u = 0; u < 4; ++u) acc[i][u] = _mm512_fmadd_ps(ld_f32(ar[i] + t + 16 * u), wv[u], acc[i][u]);
    }
    for (; t + 16 <= k; t += 16) {
      const __m512 wv = ld_w(bt, br + t * es);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i][0] = _mm512_fmadd_ps(ld_f32(ar[i] + t), wv, acc[i][0]);
    }
    if (t < k) {
      const __mmask16 mk = static_cast<__mmask16>((1u << (k - t)) - 1);
      const __m512 wv = ld_w_mask(bt, br + t * es, mk);
      _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) acc[i][1] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, ar[i] + t), wv, acc[i][1]);
    }
    _Pragma("GCC unroll 16") for (int i = 0; i < NA; ++i) {
      const float s = _mm512_reduce_add_ps(
          _mm512_add_ps(_mm512_add_ps(acc[i][0], acc[i][2]), _mm512_add_ps(acc[i][1], acc[i][3])));
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

bool use_bf16_dot() { return cpu_features().avx512bf16; }

// In-register transpose of 16 vectors of 16 dwords.
inline void transpose16(__m512i* r) {
  __m512i t[16];
  _Pragma("GCC unroll 16") for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
  }
  _Pragma("GCC unroll 16") for (int i = 0; i < 4; ++i) {
    r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
    r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
    r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
  }
  _Pragma("GCC unroll 16") for (int e = 0; e < 4; ++e) {
    const __m512i a = _mm512_shuffle_i32x4(r[e], r[4 + e], 0x88);
    const __m512i b = _mm512_shuffle_i32x4(r[e], r[4 + e], 0xDD);
    const __m512i c = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0x88);
    const __m512i d = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0xDD);
    t[e] = _mm512_shuffle_i32x4(a, c, 0x88);
    t[8 + e] = _mm512_shuffle_i32x4(a, c, 0xDD);
    t[4 + e] = _mm512_shuffle_i32x4(b, d, 0x88);
    t[12 + e] = _mm512_shuffle_i32x4(b, d, 0xDD);
  }
  _Pragma("GCC unroll 16") for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// Packed activation vector layouts (16 rows; rows past m are zero):
//   float weights: f32 [k][16]; BF16 weights with vdpbf16ps: bf16 pairs [ceil(k/2)][16]
//   quantized: codes [k/4][16] (4 int8 per dword), then d [nd][16] f32, then
//   corrections [nc][16] int32 (Q8_0/Q4_0: per 32, Q6_K: per 16), or for
//   Q4_K block-sum pairs [k/64][16] (two int16 per dword).
struct QPackLayout {
  size_t codes = 0, d = 0, corr = 0, bytes = 0;
  int64_t nd = 0, nc = 0;
};
QPackLayout qpack_layout(DType wt, int64_t k) {
  QPackLayout P;
  P.codes = 0;
  P.d = static_cast<size_t>(k) / 4 * 64;
  const bool kq = wt == DType::Q4_K || wt == DType::Q6_K;
  P.nd = kq ? k / 256 : k / 32;
  P.corr = P.d + static_cast<size_t>(P.nd) * 64;
  P.nc = wt == DType::Q6_K ? k / 16 : wt == DType::Q4_K ? k / 64 : k / 32;
  P.bytes = P.corr + static_cast<size_t>(P.nc) * 64;
  return P;
}

size_t pack_bytes(DType wt, int64_t k) {
  if (wt == DType::F32 || wt == DType::F16) return static_cast<size_t>(k) * 64;
  if (wt == DType::BF16) return use_bf16_dot() ? static_cast<size_t>((k + 1) / 2) * 64 : static_cast<size_t>(k) * 64;
  return qpack_layout(wt, k).bytes;
}

void pack_acts(DType wt, const float* x, int64_t lda, const uint8_t* qacts, const ActLayout& L, int64_t m, int64_t k,
               int64_t v, uint8_t* out) {
  const int64_t row0 = v * VL;
  const int nrows = static_cast<int>(std::min<int64_t>(VL, m - row0));
  if (wt == DType::BF16 && use_bf16_dot()) {
    // Row-wise: 32 floats → 16 dwords of bf16 pairs (RNE), then transpose.
    auto* o = reinterpret_cast<__m512i*>(out);
    for (int64_t t = 0; t < k; t += 32) {
      __m512i r[16];
      const int64_t rem = k - t;
      const __mmask16 m0 = rem >= 16 ? 0xffff : static_cast<__mmask16>((1u << rem) - 1);
      const __mmask16 m1 = rem >= 32 ? 0xffff : rem <= 16 ? 0 : static_cast<__mmask16>((1u << (rem - 16)) - 1);
      _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l) {
        if (l < nrows) {
          const float* xr = x + (row0 + l) * lda + t;
          const __m512 lo = _mm512_maskz_loadu_ps(m0, xr), hi = _mm512_maskz_loadu_ps(m1, xr + 16);
          r[l] = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
        } else {
          r[l] = _mm512_setzero_si512();
        }
      }
      transpose16(r);
      const int64_t np = std::min<int64_t>(16, (rem + 1) / 2);
      for (int64_t p = 0; p < np; ++p) _mm512_storeu_si512(o + t / 2 + p, r[p]);
    }
    return;
  }
  if (wt == DType::F32 || wt == DType::F16 || wt == DType::BF16) {
    auto* o = reinterpret_cast<__m512i*>(out);
    for (int64_t t = 0; t < k; t += 16) {
      const int64_t rem = std::min<int64_t>(16, k - t);
      const __mmask16 mk = rem == 16 ? 0xffff : static_cast<__mmask16>((1u << rem) - 1);
      __m512i r[16];
      _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l)
        r[l] = l < nrows ? _mm512_maskz_loadu_epi32(mk, x + (row0 + l) * lda + t) : _mm512_setzero_si512();
      transpose16(r);
      for (int64_t e = 0; e < rem; ++e) _mm512_storeu_si512(o + t + e, r[e]);
    }
    return;
  }
  const QPackLayout P = qpack_layout(wt, k);
  QRow rows[16];
  for (int l = 0; l < nrows; ++l) rows[l] = qrow(qacts, L, row0 + l);
  auto* codes = reinterpret_cast<__m512i*>(out + P.codes);
  for (int64_t t = 0; t < k; t += 64) {  // k is a multiple of 32
    const int64_t rem = std::min<int64_t>(64, k - t);
    __m512i r[16];
    _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l) r[l] = l < nrows ? _mm512_loadu_si512(rows[l].qs + t) : _mm512_setzero_si512();
    transpose16(r);
    for (int64_t e = 0; e < rem / 4; ++e) _mm512_storeu_si512(codes + t / 4 + e, r[e]);
  }
  auto* dd = reinterpret_cast<float*>(out + P.d);
  for (int64_t b = 0; b < P.nd; ++b)
    _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l) dd[b * 16 + l] = l < nrows ? rows[l].d[b] : 0.0f;
  auto* cc = reinterpret_cast<int32_t*>(out + P.corr);
  for (int64_t b = 0; b < P.nc; ++b)
    _Pragma("GCC unroll 16") for (int l = 0; l < 16; ++l) {
      int32_t val = 0;
      if (l < nrows) std::memcpy(&val, static_cast<const uint8_t*>(rows[l].aux) + 4 * b, 4);
      cc[b * 16 + l] = val;
    }
}

// ---- weight decode (per tile of MR rows and a k-chunk) ----

// Decoded weights for one chunk: MR rows of kc values with row stride KC.
struct WTile {
  uint8_t* codes;   // u8 codes [MR][KC] (quant) / f32 [MR][KC] / bf16 pairs [MR][KC/2]
  float* scale;     // [MR][KC/16] (per 32 or per 16 codes)
  int32_t* mins;    // Q4_K: [MR][KC/64] int16 pairs
  float* dmin;      // Q4_K: [MR][KC/256]
};

constexpr int64_t KCQ = 1024;  // k-chunk, quantized weights (multiple of 256)
constexpr int64_t KCF = 256;   // k-chunk, float weights (even)

size_t wtile_bytes(int MR) {
  return static_cast<size_t>(MR) * (KCQ * 4 + KCQ / 16 * 4 + KCQ / 64 * 4 + KCQ / 256 * 4) + 256;
}

void decode_quant_row(DType wt, const uint8_t* row, int64_t k0, int64_t kc, uint8_t* codes, float* scale,
                      int32_t* mins, float* dmin) {
  switch (wt) {
    case DType::Q8_0: {
      const auto* w = reinterpret_cast<const BlockQ8_0*>(row) + k0 / 32;
      const __m256i x80 = _mm256_set1_epi8(static_cast<char>(0x80));
      for (int64_t b = 0; b < kc / 32; ++b) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + 32 * b),
                            _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w[b].qs)), x80));
        scale[b] = h2f(w[b].d);
      }
      return;
    }
    case DType::Q4_0: {
      const auto* w = reinterpret_cast<const BlockQ4_0*>(row) + k0 / 32;
      const __m256i m4 = _mm256_set1_epi8(0x0f);
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
        __m512i W[4];
        q4k_codes(w[b].qs, W);
        _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j) _mm512_storeu_si512(codes + 256 * b + 64 * j, W[j]);
        alignas(16) uint8_t sm[16];
        _mm_store_si128(reinterpret_cast<__m128i*>(sm), q4k_scales(w[b].scales));
        const float d = h2f(w[b].d);
        // Stored position j holds sub-block kQ4KOrder[j] (codes, activations and sums alike).
        _Pragma("GCC unroll 16") for (int j = 0; j < 8; ++j) scale[8 * b + j] = d * sm[kQ4KOrder[j]];
        _Pragma("GCC unroll 16") for (int p = 0; p < 4; ++p) mins[4 * b + p] =
            sm[8 + kQ4KOrder[2 * p]] | (sm[8 + kQ4KOrder[2 * p + 1]] << 16);
        dmin[b] = h2f(w[b].dmin);
      }
      return;
    }
    case DType::Q6_K: {
      const auto* w = reinterpret_cast<const BlockQ6_K*>(row) + k0 / 256;
      for (int64_t b = 0; b < kc / 256; ++b) {
        __m512i W[4];
        q6k_codes(w[b].ql, w[b].qh, W);
        _Pragma("GCC unroll 16") for (int j = 0; j < 4; ++j) _mm512_storeu_si512(codes + 256 * b + 64 * j, W[j]);
        const float d = h2f(w[b].d);
        _Pragma("GCC unroll 16") for (int j = 0; j < 16; ++j) scale[16 * b + j] = d * w[b].scales[j];
      }
      return;
    }
    default: return;
  }
}

// ---- quantized micro-kernels: MR weight rows x NV activation vectors ----
//
// acc lanes are activation rows; ct points at the result tile (row r of the
// tile = weight row, NV*16 floats per row used here, stride ldct).

template <int MR, int NV>
inline void qk_blocks32(DType wt, const WTile& W, int64_t kc, const uint8_t* const* av, const QPackLayout& P,
                        int64_t k0, float* ct, int64_t ldct) {
  // Q8_0 / Q4_0: one scale and one correction per 32 codes.
  __m512 facc[MR][NV];
  _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) facc[r][v] = _mm512_setzero_ps();
  constexpr int64_t nG = KCQ / 16;  // scale row stride
  for (int64_t g = 0; g < kc / 32; ++g) {
    const int64_t gb = k0 / 32 + g;
    __m512i iacc[MR][NV];
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      const __m512i c = _mm512_loadu_si512(av[v] + P.corr + gb * 64);
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) iacc[r][v] = c;
    }
    _Pragma("GCC unroll 16") for (int s = 0; s < 8; ++s) {
      __m512i A[NV];
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) A[v] = _mm512_loadu_si512(av[v] + P.codes + (gb * 8 + s) * 64);
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
        int32_t wd;
        std::memcpy(&wd, W.codes + r * KCQ + g * 32 + 4 * s, 4);
        const __m512i wb = _mm512_set1_epi32(wd);
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) iacc[r][v] = _mm512_dpbusd_epi32(iacc[r][v], wb, A[v]);
      }
    }
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      const __m512 D = _mm512_loadu_ps(reinterpret_cast<const float*>(av[v] + P.d) + gb * 16);
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
        facc[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[r][v]),
                                     _mm512_mul_ps(D, _mm512_set1_ps(W.scale[r * nG + g])), facc[r][v]);
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      float* p = ct + r * ldct + v * 16;
      _mm512_storeu_ps(p, _mm512_add_ps(_mm512_loadu_ps(p), facc[r][v]));
    }
}

template <int MR, int NV>
inline void qk_q4k(const WTile& W, int64_t kc, const uint8_t* const* av, const QPackLayout& P, int64_t k0, float* ct,
                   int64_t ldct) {
  constexpr int64_t nS = KCQ / 16, nM = KCQ / 64, nB = KCQ / 256;
  for (int64_t sb = 0; sb < kc / 256; ++sb) {
    const int64_t gsb = k0 / 256 + sb;
    __m512 fsb[MR][NV];
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) fsb[r][v] = _mm512_setzero_ps();
    _Pragma("GCC unroll 16") for (int j = 0; j < 8; ++j) {
      __m512i iacc[MR][NV];
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) iacc[r][v] = _mm512_setzero_si512();
      const int64_t kq = (gsb * 256 + 32 * j) / 4;  // dword index in the packed codes
      _Pragma("GCC unroll 16") for (int s = 0; s < 8; ++s) {
        __m512i A[NV];
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) A[v] = _mm512_loadu_si512(av[v] + P.codes + (kq + s) * 64);
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
          int32_t wd;
          std::memcpy(&wd, W.codes + r * KCQ + sb * 256 + 32 * j + 4 * s, 4);
          const __m512i wb = _mm512_set1_epi32(wd);
          _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) iacc[r][v] = _mm512_dpbusd_epi32(iacc[r][v], wb, A[v]);
        }
      }
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
        const __m512 sc = _mm512_set1_ps(W.scale[r * nS + sb * 8 + j]);
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) fsb[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[r][v]), sc, fsb[r][v]);
      }
    }
    // mins: sum_j m_j * (sum of the activation codes of sub-block j)
    __m512i macc[MR][NV];
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) macc[r][v] = _mm512_setzero_si512();
    _Pragma("GCC unroll 16") for (int p = 0; p < 4; ++p) {
      __m512i B[NV];
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) B[v] = _mm512_loadu_si512(av[v] + P.corr + (gsb * 4 + p) * 64);
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
        const __m512i mp = _mm512_set1_epi32(W.mins[r * nM + sb * 4 + p]);
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) macc[r][v] = _mm512_dpwssd_epi32(macc[r][v], B[v], mp);
      }
    }
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      const __m512 D = _mm512_loadu_ps(reinterpret_cast<const float*>(av[v] + P.d) + gsb * 16);
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
        const __m512 f = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(macc[r][v]), _mm512_set1_ps(W.dmin[r * nB + sb]),
                                          fsb[r][v]);
        float* p = ct + r * ldct + v * 16;
        _mm512_storeu_ps(p, _mm512_fmadd_ps(f, D, _mm512_loadu_ps(p)));
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
    __m512 fsb[MR][NV];
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) fsb[r][v] = _mm512_setzero_ps();
    _Pragma("GCC unroll 16") for (int j = 0; j < 16; ++j) {
      __m512i iacc[MR][NV];
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
        const __m512i c = _mm512_loadu_si512(av[v] + P.corr + (gsb * 16 + j) * 64);
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) iacc[r][v] = c;
      }
      const int64_t kq = (gsb * 256 + 16 * j) / 4;
      _Pragma("GCC unroll 16") for (int s = 0; s < 4; ++s) {
        __m512i A[NV];
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) A[v] = _mm512_loadu_si512(av[v] + P.codes + (kq + s) * 64);
        _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
          int32_t wd;
          std::memcpy(&wd, W.codes + r * KCQ + sb * 256 + 16 * j + 4 * s, 4);
          const __m512i wb = _mm512_set1_epi32(wd);
          _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) iacc[r][v] = _mm512_dpbusd_epi32(iacc[r][v], wb, A[v]);
        }
      }
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
        const __m512 sc = _mm512_set1_ps(W.scale[r * nS + sb * 16 + j]);
        _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) fsb[r][v] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iacc[r][v]), sc, fsb[r][v]);
      }
    }
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      const __m512 D = _mm512_loadu_ps(reinterpret_cast<const float*>(av[v] + P.d) + gsb * 16);
      _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
        float* p = ct + r * ldct + v * 16;
        _mm512_storeu_ps(p, _mm512_fmadd_ps(fsb[r][v], D, _mm512_loadu_ps(p)));
      }
    }
  }
}

// ---- float micro-kernels ----

// first: the tile has no partial sums yet (store instead of add).
template <int MR, int NV>
inline void fk_f32(const float* wt, int64_t kc, const uint8_t* const* av, int64_t k0, float* ct, int64_t ldct,
                   bool first) {
  __m512 acc[MR][NV];
  _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const float* a[NV];
  _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) a[v] = reinterpret_cast<const float*>(av[v]) + k0 * 16;
  for (int64_t t = 0; t < kc; ++t) {
    __m512 A[NV];
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) A[v] = _mm512_loadu_ps(a[v] + t * 16);
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
      const __m512 wb = _mm512_set1_ps(wt[r * KCF + t]);
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(A[v], wb, acc[r][v]);
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      float* p = ct + r * ldct + v * 16;
      _mm512_storeu_ps(p, first ? acc[r][v] : _mm512_add_ps(_mm512_loadu_ps(p), acc[r][v]));
    }
}

template <int MR, int NV>
inline void fk_bf16(const uint32_t* wt, int64_t kc, const uint8_t* const* av, int64_t k0, float* ct, int64_t ldct,
                    bool first) {
  __m512 acc[MR][NV];
  _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
  const uint8_t* a[NV];
  _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) a[v] = av[v] + (k0 / 2) * 64;
  const int64_t np = (kc + 1) / 2;
  for (int64_t p = 0; p < np; ++p) {
    __m512bh A[NV];
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) A[v] = (__m512bh)_mm512_loadu_si512(a[v] + p * 64);
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {
      const __m512bh wb = (__m512bh)_mm512_set1_epi32(static_cast<int>(wt[r * (KCF / 2) + p]));
      _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], A[v], wb);
    }
  }
  _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r)
    _Pragma("GCC unroll 16") for (int v = 0; v < NV; ++v) {
      float* p = ct + r * ldct + v * 16;
      _mm512_storeu_ps(p, first ? acc[r][v] : _mm512_add_ps(_mm512_loadu_ps(p), acc[r][v]));
    }
}

thread_local Scratch t_tile;   // result tile
thread_local Scratch t_wtile;  // decoded weights

constexpr int MRQ = 4;   // weight rows per quantized micro-tile
constexpr int MRF = 12;  // weight rows per float micro-tile

void gemm_packed(DType wt, const void* w, size_t w_row_bytes, int64_t k, const uint8_t* packed, size_t vec_bytes,
                 int64_t v0, int64_t v1, int64_t m, int64_t j0, int64_t j1, float* c, int64_t ldc, bool accumulate) {
  const bool quant = is_quant_type(wt);
  const bool bfdot = wt == DType::BF16 && use_bf16_dot();
  const int MR = quant ? MRQ : MRF;
  const int64_t nv = v1 - v0, rows = j1 - j0;
  const int64_t rows_p = (rows + MR - 1) / MR * MR;
  const int64_t ldct = nv * 16;
  float* ct = reinterpret_cast<float*>(t_tile.get(static_cast<size_t>(rows_p * ldct) * 4));
  // The quantized kernels accumulate into the tile; the float ones store on
  // the first k-chunk.
  if (quant) std::memset(ct, 0, static_cast<size_t>(rows_p * ldct) * 4);
  uint8_t* wbuf = t_wtile.get(wtile_bytes(MRF > MRQ ? MRF : MRQ));
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
          float* cp = ctr + v * 16;
          if (wt == DType::Q4_K)
            qk_q4k<MRQ, NV>(T, kc, a, P, k0, cp, ldct);
          else if (wt == DType::Q6_K)
            qk_q6k<MRQ, NV>(T, kc, a, P, k0, cp, ldct);
          else
            qk_blocks32<MRQ, NV>(wt, T, kc, a, P, k0, cp, ldct);
        };
        for (; v + 2 <= nv; v += 2) run(std::integral_constant<int, 2>{});
        if (v < nv) run(std::integral_constant<int, 1>{});
      }
    }
  } else {
    for (int64_t k0 = 0; k0 < k; k0 += KCF) {
      const int64_t kc = std::min(KCF, k - k0);
      for (int64_t rg = 0; rg < rows; rg += MRF) {
        // Decode MRF weight rows of this chunk (f32, or bf16 pairs for vdpbf16ps).
        _Pragma("GCC unroll 16") for (int r = 0; r < MRF; ++r) {
          const int64_t j = j0 + rg + r;
          if (bfdot) {
            auto* dst = reinterpret_cast<uint32_t*>(wbuf) + r * (KCF / 2);
            if (j < j1) {
              const auto* src = reinterpret_cast<const uint16_t*>(wbase + j * w_row_bytes) + k0;
              std::memcpy(dst, src, static_cast<size_t>(kc / 2) * 4);
              if (kc & 1) dst[kc / 2] = src[kc - 1];
            } else {
              std::memset(dst, 0, KCF / 2 * 4);
            }
          } else {
            float* dst = reinterpret_cast<float*>(wbuf) + r * KCF;
            if (j < j1) {
              const uint8_t* src = wbase + j * w_row_bytes + k0 * esize(wt);
              int64_t t = 0;
              for (; t + 16 <= kc; t += 16) _mm512_storeu_ps(dst + t, ld_w(wt, src + t * esize(wt)));
              if (t < kc) {
                const __mmask16 mk = static_cast<__mmask16>((1u << (kc - t)) - 1);
                _mm512_storeu_ps(dst + t, ld_w_mask(wt, src + t * esize(wt), mk));
              }
            } else {
              std::memset(dst, 0, KCF * 4);
            }
          }
        }
        float* ctr = ct + rg * ldct;
        int64_t v = 0;
        auto run = [&](auto nv_tag) {
          constexpr int NV = decltype(nv_tag)::value;
          const uint8_t* a[NV];
          _Pragma("GCC unroll 16") for (int u = 0; u < NV; ++u) a[u] = packed + (v0 + v + u) * vec_bytes;
          float* cp = ctr + v * 16;
          if (bfdot)
            fk_bf16<MRF, NV>(reinterpret_cast<const uint32_t*>(wbuf), kc, a, k0, cp, ldct, k0 == 0);
          else
            fk_f32<MRF, NV>(reinterpret_cast<const float*>(wbuf), kc, a, k0, cp, ldct, k0 == 0);
        };
        for (; v + 2 <= nv; v += 2) run(std::integral_constant<int, 2>{});
        if (v < nv) run(std::integral_constant<int, 1>{});
      }
    }
  }

  // Write the transposed tile out, 16x16 blocks at a time: tile row r is
  // weight row j0+r, lane l of vector v is activation row (v0+v)*16+l.
  const int64_t i0 = v0 * 16, i1 = std::min(m, v1 * 16);
  for (int64_t ib = i0; ib < i1; ib += 16) {
    const int64_t ni = std::min<int64_t>(16, i1 - ib);
    for (int64_t rb = 0; rb < rows; rb += 16) {
      const int64_t nr = std::min<int64_t>(16, rows - rb);
      __m512i t[16];
      _Pragma("GCC unroll 16") for (int q = 0; q < 16; ++q)
        t[q] = q < nr ? _mm512_loadu_si512(ct + (rb + q) * ldct + (ib - i0)) : _mm512_setzero_si512();
      transpose16(t);
      const __mmask16 mk = nr == 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << nr) - 1);
      for (int64_t e = 0; e < ni; ++e) {
        float* dst = c + (ib + e) * ldc + j0 + rb;
        __m512 v = _mm512_castsi512_ps(t[e]);
        if (accumulate) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, dst));
        _mm512_mask_storeu_ps(dst, mk, v);
      }
    }
  }
}

}  // namespace

const Isa* avx512_isa() {
  static const Isa isa = {
      "avx512vnni", quantize_act_row, qgemv, fgemv, VL, pack_bytes, pack_acts, gemm_packed,
      /*qgemm_min_m=*/10, /*fgemm_min_m=*/9,
  };
  return &isa;
}

}  // namespace sg::kern
