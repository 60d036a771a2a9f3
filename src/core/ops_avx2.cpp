// The AVX2 (+FMA) instances of core/vector_math.h, chosen at run time by ops.cpp.
#include "core/vector_math.h"

#include <immintrin.h>

#include "core/quant.h"

namespace sg::ops {

void gelu_erf_avx2(float* x, int64_t n) { lanes::gelu_rows<f32x8, i32x8>(x, n); }
void exp_shifted_avx2(float* x, int64_t n, float shift) { lanes::exp_shifted<f32x8, i32x8>(x, n, shift); }

float dot_f16_avx2(const float* a, const uint16_t* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 bf = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), bf, acc);
  }
  const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  const __m128 q = _mm_add_ps(h, _mm_movehl_ps(h, h));
  float s = _mm_cvtss_f32(_mm_add_ss(q, _mm_shuffle_ps(q, q, 1)));
  for (; i < n; ++i) s += a[i] * f16_to_f32(b[i]);
  return s;
}

void axpy_f16_avx2(float* y, float a, const uint16_t* x, int64_t n) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 xf = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i)));
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, xf, _mm256_loadu_ps(y + i)));
  }
  for (; i < n; ++i) y[i] += a * f16_to_f32(x[i]);
}

void to_f16_avx2(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

}  // namespace sg::ops
