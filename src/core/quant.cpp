// Scalar reference quantizers/dequantizers for the GGUF block formats and
// exact (round-to-nearest-even) fp16/bf16 conversions.
//
// Block layouts follow ggml (ggml-common.h); the quantizers follow the ideas of
// ggml's reference quantizers (weighted least-squares search of scale and min
// for Q4_K, of the scale for Q6_K) but are written for this project.
#include "core/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"

namespace sg {

namespace {

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest, ties to even, as an int. Adding 1.5 * 2^23 leaves the
// rounded integer in the low mantissa bits (exact RNE for |x| < 2^22); the
// clamp keeps larger values (clamped by every caller anyway) in that range.
// Same results as nearbyintf, without a libm call per element.
inline int round_even(float x) {
  x = std::min(std::max(x, -4194303.0f), 4194303.0f);
  const float f = x + 12582912.0f;
  int32_t i;
  std::memcpy(&i, &f, 4);
  return (i & 0x007fffff) - 0x00400000;
}

}  // namespace

// ---------------------------------------------------------------- fp16/bf16

float f16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return float_of(sign | 0x7f800000u | (mant << 13));  // inf / NaN (payload kept)
  if (exp != 0) return float_of(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return float_of(sign);
  // Subnormal: value = mant * 2^-24, exactly representable as a normal float.
  int e = 113;  // exponent (biased, float) of 2^-14 is 113
  while (!(mant & 0x400)) {
    mant <<= 1;
    --e;
  }
  return float_of(sign | (static_cast<uint32_t>(e) << 23) | ((mant & 0x3ff) << 13));
}

uint16_t f32_to_f16(float f) {
  const uint32_t x = bits_of(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {
    if (ax == 0x7f800000u) return sign | 0x7c00;  // inf
    // NaN: keep the top payload bits like numpy; never turn it into inf.
    uint16_t m = static_cast<uint16_t>((ax & 0x7fffff) >> 13);
    if (m == 0) m = 1;
    return sign | 0x7c00 | m;
  }
  if (ax >= 0x477ff000u) return sign | 0x7c00;  // >= 65520 rounds to inf
  if (ax >= 0x38800000u) {                      // normal half (>= 2^-14)
    uint32_t h = (ax - 0x38000000u) >> 13;      // rebias exponent 127 -> 15
    const uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
    return sign | static_cast<uint16_t>(h);
  }
  if (ax <= 0x33000000u) return sign;  // <= 2^-25: rounds to (signed) zero
  // Subnormal half: q = value / 2^-24, rounded to nearest even.
  const uint32_t e = ax >> 23;                    // 102..112
  const uint32_t m = (ax & 0x7fffff) | 0x800000;  // value = m * 2^(e-150)
  const uint32_t shift = 126 - e;                 // 14..24
  uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  if (rem > half || (rem == half && (q & 1))) ++q;
  return sign | static_cast<uint16_t>(q);
}

float bf16_to_f32(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

uint16_t f32_to_bf16(float f) {
  const uint32_t x = bits_of(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;  // NaN, as c10::BFloat16 does
  const uint32_t bias = 0x7fff + ((x >> 16) & 1);
  return static_cast<uint16_t>((x + bias) >> 16);
}

// ---------------------------------------------------------------- Q8_0 / Q4_0

namespace {

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = static_cast<int8_t>(std::clamp(round_even(x[j] * id), -127, 127));
  }
}

void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < kQK; ++j) *y++ = d * x[i].qs[j];
  }
}

// Same convention as ggml's reference Q4_0: the element of largest magnitude
// maps exactly to code 0 (value -8*d), so d carries its sign.
void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0, vmax = 0;
    for (int j = 0; j < kQK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
    }
    const float d = vmax / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int a = std::clamp(static_cast<int>(std::floor(x[j] * id + 8.5f)), 0, 15);
      const int b = std::clamp(static_cast<int>(std::floor(x[j + kQK / 2] * id + 8.5f)), 0, 15);
      y[i].qs[j] = static_cast<uint8_t>(a | (b << 4));
    }
  }
}

void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = d * ((x[i].qs[j] & 0xf) - 8);
      y[j + kQK / 2] = d * ((x[i].qs[j] >> 4) - 8);
    }
  }
}

// ---------------------------------------------------------------- Q4_K

// Fits x[i] ≈ scale * L[i] - mn with L in [0, nmax] minimising the weighted
// squared error: start from the min/max grid, then try a range of grid
// spacings, and for each one solve the 2x2 least-squares problem for
// (scale, min) given the rounded codes. Returns scale; *mn_out >= 0.
// Errors are evaluated in closed form from weighted sums (in double):
//   E(s, m) = s²Σwl² + 2smΣwl + m²Σw - 2sΣwlx - 2mΣwx + Σwx².
float fit_scale_min(const float* x, const float* w, int n, int nmax, uint8_t* L, float* mn_out) {
  float lo = x[0], hi = x[0];
  double sw = 0, swx = 0, swxx = 0;
  for (int i = 0; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
    sw += w[i];
    swx += static_cast<double>(w[i]) * x[i];
    swxx += static_cast<double>(w[i]) * x[i] * x[i];
  }
  lo = std::min(lo, 0.0f);  // the offset only ever lowers the grid start
  if (hi <= lo) {
    std::fill(L, L + n, uint8_t{0});
    *mn_out = -lo;
    return 0;
  }
  uint8_t cand[kQKK];
  double sl = 0, sll = 0, sxl = 0;
  // Codes for grid spacing 1/inv starting at lo, and their weighted sums.
  auto codes = [&](float inv, uint8_t* out) {
    sl = sll = sxl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(round_even(inv * (x[i] - lo)), 0, nmax);
      out[i] = static_cast<uint8_t>(l);
      const double wl = static_cast<double>(w[i]) * l;
      sl += wl;
      sll += wl * l;
      sxl += wl * x[i];
    }
  };
  auto error_of = [&](double s, double m) {
    return s * s * sll + 2 * s * m * sl + m * m * sw - 2 * s * sxl - 2 * m * swx + swxx;
  };
  float best_scale = (hi - lo) / nmax, best_min = lo;
  codes(nmax / (hi - lo), L);
  double best_err = error_of(best_scale, best_min);
  for (int step = 0; step <= 20; ++step) {
    codes((nmax - 1.0f + 0.1f * step) / (hi - lo), cand);
    const double det = sw * sll - sl * sl;
    if (det <= 0) continue;
    double sc = (sw * sxl - swx * sl) / det;
    double m = (sll * swx - sl * sxl) / det;
    if (m > 0) {  // a positive offset cannot be stored: refit with m = 0
      m = 0;
      sc = sxl / sll;
    }
    const double err = error_of(sc, m);
    if (err < best_err) {
      best_err = err;
      best_scale = static_cast<float>(sc);
      best_min = static_cast<float>(m);
      std::copy(cand, cand + n, L);
    }
  }
  *mn_out = -best_min;
  return best_scale;
}

// ggml's 12-byte packing of eight 6-bit scales and eight 6-bit mins.
inline void get_scale_min_k4(int j, const uint8_t* q, int* sc, int* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4);
    *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void quantize_q4_k(const float* x, BlockQ4_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    float scales[8], mins[8], w[32];
    float max_scale = 0, max_min = 0;
    for (int j = 0; j < 8; ++j) {
      const float* xs = x + 32 * j;
      float s2 = 0;
      for (int l = 0; l < 32; ++l) s2 += xs[l] * xs[l];
      const float rms = std::sqrt(s2 / 32);
      for (int l = 0; l < 32; ++l) w[l] = rms + std::fabs(xs[l]);  // favour large weights
      scales[j] = fit_scale_min(xs, w, 32, 15, L + 32 * j, &mins[j]);
      max_scale = std::max(max_scale, scales[j]);
      max_min = std::max(max_min, mins[j]);
    }
    const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
    const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    for (int j = 0; j < 8; ++j) {
      const int ls = std::min(63, round_even(inv_scale * scales[j]));
      const int lm = std::min(63, round_even(inv_min * mins[j]));
      if (j < 4) {
        y[i].scales[j] |= static_cast<uint8_t>(ls);
        y[i].scales[j + 4] |= static_cast<uint8_t>(lm);
      } else {
        y[i].scales[j + 4] = static_cast<uint8_t>((ls & 0xf) | ((lm & 0xf) << 4));
        y[i].scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
        y[i].scales[j] |= static_cast<uint8_t>((lm >> 4) << 6);
      }
    }
    y[i].d = f32_to_f16(max_scale / 63.0f);
    y[i].dmin = f32_to_f16(max_min / 63.0f);
    // Re-derive the codes against the scales actually stored.
    const float d = f16_to_f32(y[i].d), dmin = f16_to_f32(y[i].dmin);
    for (int j = 0; j < 8; ++j) {
      int sc, mn;
      get_scale_min_k4(j, y[i].scales, &sc, &mn);
      const float ds = d * sc;
      if (ds == 0) continue;
      const float dm = dmin * mn;
      for (int l = 0; l < 32; ++l)
        L[32 * j + l] = static_cast<uint8_t>(std::clamp(round_even((x[32 * j + l] + dm) / ds), 0, 15));
    }
    for (int c = 0; c < 4; ++c)
      for (int l = 0; l < 32; ++l)
        y[i].qs[32 * c + l] = static_cast<uint8_t>(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
  }
}

void dequantize_q4_k(const BlockQ4_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    for (int c = 0; c < 4; ++c) {
      int sc0, m0, sc1, m1;
      get_scale_min_k4(2 * c, x[i].scales, &sc0, &m0);
      get_scale_min_k4(2 * c + 1, x[i].scales, &sc1, &m1);
      const float d0 = d * sc0, mm0 = dmin * m0, d1 = d * sc1, mm1 = dmin * m1;
      const uint8_t* q = x[i].qs + 32 * c;
      for (int l = 0; l < 32; ++l) *y++ = d0 * (q[l] & 0xf) - mm0;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] >> 4) - mm1;
    }
  }
}

// ---------------------------------------------------------------- Q6_K

// Symmetric fit x ≈ scale * (L - 32) with L - 32 in [-32, 31], weighting each
// element by x², trying grid spacings around the max-abs one. Returns scale
// (negative when the largest-magnitude element is positive, as in ggml).
float fit_scale_sym(const float* x, int n, int8_t* L) {
  constexpr int nmax = 32;
  float amax = 0, vmax = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      vmax = x[i];
    }
  }
  if (amax < 1e-15f) {
    std::fill(L, L + n, int8_t{0});
    return 0;
  }
  float best_scale = 0, best_score = -1;
  int8_t cand[16];
  for (int step = -9; step <= 9; ++step) {
    const float inv = -(nmax + 0.1f * step) / vmax;
    float sxl = 0, sll = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(round_even(inv * x[i]), -nmax, nmax - 1);
      cand[i] = static_cast<int8_t>(l);
      const float w = x[i] * x[i];
      sxl += w * x[i] * l;
      sll += w * l * l;
    }
    // With the optimal scale sxl/sll, the weighted error drops by sxl²/sll.
    if (sll > 0 && sxl * sxl / sll > best_score) {
      best_score = sxl * sxl / sll;
      best_scale = sxl / sll;
      std::copy(cand, cand + n, L);
    }
  }
  return best_scale;
}

void quantize_q6_k(const float* x, BlockQ6_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    int8_t L[kQKK];
    float scales[16];
    float max_scale = 0, max_abs = 0;
    for (int j = 0; j < 16; ++j) {
      scales[j] = fit_scale_sym(x + 16 * j, 16, L + 16 * j);
      if (std::fabs(scales[j]) > max_abs) {
        max_abs = std::fabs(scales[j]);
        max_scale = scales[j];
      }
    }
    std::memset(&y[i], 0, sizeof(BlockQ6_K));
    if (max_abs < 1e-15f) continue;  // all-zero block
    const float iscale = -128.0f / max_scale;
    y[i].d = f32_to_f16(1.0f / iscale);
    for (int j = 0; j < 16; ++j) y[i].scales[j] = static_cast<int8_t>(std::min(127, round_even(iscale * scales[j])));
    const float d = f16_to_f32(y[i].d);
    uint8_t Q[kQKK];
    for (int j = 0; j < 16; ++j) {
      const float ds = d * y[i].scales[j];
      for (int l = 0; l < 16; ++l) {
        const int q = ds != 0 ? std::clamp(round_even(x[16 * j + l] / ds), -32, 31) : 0;
        Q[16 * j + l] = static_cast<uint8_t>(q + 32);
      }
    }
    for (int h = 0; h < 2; ++h) {  // two halves of 128
      const uint8_t* q = Q + 128 * h;
      uint8_t* ql = y[i].ql + 64 * h;
      uint8_t* qh = y[i].qh + 32 * h;
      for (int l = 0; l < 32; ++l) {
        ql[l] = static_cast<uint8_t>((q[l] & 0xf) | ((q[l + 64] & 0xf) << 4));
        ql[l + 32] = static_cast<uint8_t>((q[l + 32] & 0xf) | ((q[l + 96] & 0xf) << 4));
        qh[l] = static_cast<uint8_t>((q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) |
                                     ((q[l + 96] >> 4) << 6));
      }
    }
  }
}

void dequantize_q6_k(const BlockQ6_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = f16_to_f32(x[i].d);
    for (int h = 0; h < 2; ++h, y += 128) {
      const uint8_t* ql = x[i].ql + 64 * h;
      const uint8_t* qh = x[i].qh + 32 * h;
      const int8_t* sc = x[i].scales + 8 * h;
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

// ---------------------------------------------------------------- Q8_K

void quantize_q8_k(const float* x, BlockQ8_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    float amax = 0, vmax = 0;
    for (int j = 0; j < kQKK; ++j) {
      if (std::fabs(x[j]) > amax) {
        amax = std::fabs(x[j]);
        vmax = x[j];
      }
    }
    if (amax == 0) {
      std::memset(&y[i], 0, sizeof(BlockQ8_K));
      continue;
    }
    const float iscale = -127.0f / vmax;
    for (int j = 0; j < kQKK; ++j) y[i].qs[j] = static_cast<int8_t>(std::min(127, round_even(iscale * x[j])));
    for (int j = 0; j < kQKK / 16; ++j) {
      int s = 0;
      for (int l = 0; l < 16; ++l) s += y[i].qs[16 * j + l];
      y[i].bsums[j] = static_cast<int16_t>(s);
    }
    y[i].d = 1.0f / iscale;
  }
}

void dequantize_q8_k(const BlockQ8_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i)
    for (int j = 0; j < kQKK; ++j) *y++ = x[i].d * x[i].qs[j];
}

void check_len(DType t, int64_t n) {
  const auto& tr = traits(t);
  if (n < 0 || n % tr.block_elems != 0)
    throw Error("row length " + std::to_string(n) + " is not a multiple of the " + std::string(tr.name) +
                " block size " + std::to_string(tr.block_elems));
}

}  // namespace

void quantize_row(DType t, const float* x, void* y, int64_t n) {
  check_len(t, n);
  switch (t) {
    case DType::F32: std::memcpy(y, x, static_cast<size_t>(n) * 4); return;
    case DType::F16: {
      auto* o = static_cast<uint16_t*>(y);
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(x[i]);
      return;
    }
    case DType::BF16: {
      auto* o = static_cast<uint16_t*>(y);
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(x[i]);
      return;
    }
    case DType::Q8_0: quantize_q8_0(x, static_cast<BlockQ8_0*>(y), n / kQK); return;
    case DType::Q4_0: quantize_q4_0(x, static_cast<BlockQ4_0*>(y), n / kQK); return;
    case DType::Q4_K: quantize_q4_k(x, static_cast<BlockQ4_K*>(y), n / kQKK); return;
    case DType::Q6_K: quantize_q6_k(x, static_cast<BlockQ6_K*>(y), n / kQKK); return;
    case DType::Q8_K: quantize_q8_k(x, static_cast<BlockQ8_K*>(y), n / kQKK); return;
  }
  throw Error("quantize_row: unsupported type");
}

void dequantize_row(DType t, const void* x, float* y, int64_t n) {
  check_len(t, n);
  switch (t) {
    case DType::F32: std::memcpy(y, x, static_cast<size_t>(n) * 4); return;
    case DType::F16: {
      const auto* h = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(h[i]);
      return;
    }
    case DType::BF16: {
      const auto* h = static_cast<const uint16_t*>(x);
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(h[i]);
      return;
    }
    case DType::Q8_0: dequantize_q8_0(static_cast<const BlockQ8_0*>(x), y, n / kQK); return;
    case DType::Q4_0: dequantize_q4_0(static_cast<const BlockQ4_0*>(x), y, n / kQK); return;
    case DType::Q4_K: dequantize_q4_k(static_cast<const BlockQ4_K*>(x), y, n / kQKK); return;
    case DType::Q6_K: dequantize_q6_k(static_cast<const BlockQ6_K*>(x), y, n / kQKK); return;
    case DType::Q8_K: dequantize_q8_k(static_cast<const BlockQ8_K*>(x), y, n / kQKK); return;
  }
  throw Error("dequantize_row: unsupported type");
}

}  // namespace sg
