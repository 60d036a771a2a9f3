// Elementwise math on SIMD lanes with GCC/Clang vector extensions: one
// source for every ISA (a 4-lane instance compiles to SSE2, an 8-lane one in
// an *_avx2.cpp file to AVX2), written branch-free. GCC does not
// auto-vectorize these loops itself (the clamp and the float↔int bit cast
// stop it), and std::erf / std::exp are scalar calls.
#pragma once
#include <cstdint>
#include <cstring>

namespace sg::ops {

using f32x4 = float __attribute__((vector_size(16)));
using i32x4 = int32_t __attribute__((vector_size(16)));
using f32x8 = float __attribute__((vector_size(32)));
using i32x8 = int32_t __attribute__((vector_size(32)));

void gelu_erf_avx2(float* x, int64_t n);               // ops_avx2.cpp
void exp_shifted_avx2(float* x, int64_t n, float shift);
float dot_f16_avx2(const float* a, const uint16_t* b, int64_t n);  // F16C
void axpy_f16_avx2(float* y, float a, const uint16_t* x, int64_t n);
void to_f16_avx2(const float* x, uint16_t* y, int64_t n);

namespace lanes {

// exp(x), clamped to [-87, 88]: n = round(x / ln 2) by the 1.5·2^23 trick,
// r = x − n·ln 2 in two parts (Cody–Waite), |r| <= ln 2 / 2, exp(r) by
// Cephes' minimax polynomial for expf (about 1 ulp), times 2^n built in the
// exponent bits.
template <class F, class I>
inline F exp(F x) {
  x = x < -87.0f ? F{} - 87.0f : x;
  x = x > 88.0f ? F{} + 88.0f : x;
  const F shifted = x * 1.44269504088896341f + 12582912.0f;
  const F n = shifted - 12582912.0f;
  I ni;
  std::memcpy(&ni, &shifted, sizeof ni);
  ni = ni - 0x4B400000;
  const F r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  F p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const F er = p * r * r + r + 1.0f;
  const I bits = (ni + 127) << 23;
  F scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return er * scale;
}

// GELU in its exact form 0.5·v·(1 + erf(v/√2)), erf by Abramowitz–Stegun
// 7.1.26 (|error| < 1.5e-7, float round-off at these magnitudes).
template <class F, class I>
inline F gelu(F v) {
  const F z = v * 0.70710678118654752f;
  const F az = z < 0.0f ? -z : z;
  const F t = 1.0f / (az * 0.3275911f + 1.0f);
  const F poly =
      ((((t * 1.061405429f - 1.453152027f) * t + 1.421413741f) * t - 0.284496736f) * t + 0.254829592f) * t;
  const F erf_abs = 1.0f - poly * exp<F, I>(F{} - az * az);
  const F erf_z = z < 0.0f ? -erf_abs : erf_abs;
  return 0.5f * v * (1.0f + erf_z);  // PyTorch's form (the same cancellation for very negative v)
}

// Applies fn to n values in place, L lanes at a time; the tail goes through
// the same lanes, so every element gets the same math whatever its position.
template <class F, class Fn>
void map_lanes(float* x, int64_t n, Fn fn) {
  constexpr int64_t L = sizeof(F) / sizeof(float);
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    F v;
    std::memcpy(&v, x + i, sizeof v);
    v = fn(v);
    std::memcpy(x + i, &v, sizeof v);
  }
  if (i < n) {
    F v = {};
    std::memcpy(&v, x + i, sizeof(float) * static_cast<size_t>(n - i));
    v = fn(v);
    std::memcpy(x + i, &v, sizeof(float) * static_cast<size_t>(n - i));
  }
}

template <class F, class I>
void gelu_rows(float* x, int64_t n) {
  map_lanes<F>(x, n, [](F v) { return gelu<F, I>(v); });
}

// x = exp(x − shift); exactly 0 where x − shift < −87 (e.g. −inf for a mask).
template <class F, class I>
void exp_shifted(float* x, int64_t n, float shift) {
  map_lanes<F>(x, n, [shift](F v) {
    const F d = v - shift;
    return d < -87.0f ? F{} : exp<F, I>(d);
  });
}

}  // namespace lanes
}  // namespace sg::ops
