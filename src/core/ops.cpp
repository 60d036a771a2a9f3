#include "core/ops.h"

#include <algorithm>
#include <cmath>

#include "core/cpu.h"
#include "core/quant.h"
#include "core/vector_math.h"

namespace sg::ops {

void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) y[i] = w[i] * (x[i] * scale);
}

void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i];
  const double mean = s / n;
  double v = 0;
  for (int64_t i = 0; i < n; ++i) v += (x[i] - mean) * (x[i] - mean);
  const float inv = static_cast<float>(1.0 / std::sqrt(v / n + eps));
  const float m = static_cast<float>(mean);
  for (int64_t i = 0; i < n; ++i) y[i] = (x[i] - m) * inv * w[i] + b[i];
}

void softmax(float* x, int64_t n) {
  float mx = -INFINITY;
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  static const auto exp_kernel =
      cpu_features().has_avx2_path() ? exp_shifted_avx2 : lanes::exp_shifted<f32x4, i32x4>;
  exp_kernel(x, n, mx);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

float exp_approx(float x) {
  f32x4 v = {x};
  return lanes::exp<f32x4, i32x4>(v)[0];
}

void gelu_erf(float* x, int64_t n) {
  static const auto kernel = cpu_features().has_avx2_path() ? gelu_erf_avx2 : lanes::gelu_rows<f32x4, i32x4>;
  kernel(x, n);
}

void add(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

float dot(const float* a, const float* b, int64_t n) {
  // Eight partial sums: vectorizable without -ffast-math, and closer to a
  // pairwise (BLAS-like) sum than one running total.
  float acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) acc[j] += a[i + j] * b[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void axpy(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

float dot_f16(const float* a, const uint16_t* b, int64_t n) {
  if (cpu_features().has_avx2_path()) return dot_f16_avx2(a, b, n);
  float s = 0;
  for (int64_t i = 0; i < n; ++i) s += a[i] * f16_to_f32(b[i]);
  return s;
}

void axpy_f16(float* y, float a, const uint16_t* x, int64_t n) {
  if (cpu_features().has_avx2_path()) return axpy_f16_avx2(y, a, x, n);
  for (int64_t i = 0; i < n; ++i) y[i] += a * f16_to_f32(x[i]);
}

void to_f16(const float* x, uint16_t* y, int64_t n) {
  if (cpu_features().has_avx2_path()) return to_f16_avx2(x, y, n);
  for (int64_t i = 0; i < n; ++i) y[i] = f32_to_f16(x[i]);
}

void rope_table(int64_t pos, int64_t rope_dim, float theta, float* cos_out, float* sin_out) {
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const float inv_freq =
        1.0f / std::pow(theta, static_cast<float>(2 * i) / static_cast<float>(rope_dim));
    const float ang = static_cast<float>(pos) * inv_freq;
    cos_out[i] = std::cos(ang);
    sin_out[i] = std::sin(ang);
  }
}

void rope_interleaved(float* x, int64_t rope_dim, const float* cos, const float* sin) {
  for (int64_t i = 0; i < rope_dim / 2; ++i) {
    const float a = x[2 * i], b = x[2 * i + 1];
    x[2 * i] = a * cos[i] - b * sin[i];
    x[2 * i + 1] = b * cos[i] + a * sin[i];
  }
}

}  // namespace sg::ops
