// Row ops against their definitions: the vectorized GELU and exp (both SIMD
// paths this CPU has), and softmax with masked (−inf) entries.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/cpu.h"
#include "core/ops.h"
#include "core/quant.h"
#include "core/vector_math.h"

using namespace sg;

namespace {

void expect_gelu_exact(void (*gelu)(float*, int64_t), const char* name) {
  // 10,001 values in [-12, 12] (an odd count: the tail path runs too).
  std::vector<float> x(10001);
  for (size_t i = 0; i < x.size(); ++i) x[i] = -12.0f + 24.0f * static_cast<float>(i) / 10000.0f;
  std::vector<float> y = x;
  gelu(y.data(), static_cast<int64_t>(y.size()));
  for (size_t i = 0; i < x.size(); ++i) {
    const double v = x[i], want = 0.5 * v * std::erfc(-v / std::sqrt(2.0));
    ASSERT_NEAR(y[i], want, 4e-7 * std::max(1.0, std::fabs(want))) << name << " at x = " << v;
  }
}

}  // namespace

TEST(Ops, GeluMatchesTheErfDefinition) {
  expect_gelu_exact(ops::lanes::gelu_rows<ops::f32x4, ops::i32x4>, "sse2");
  if (cpu_features().has_avx2_path()) expect_gelu_exact(ops::gelu_erf_avx2, "avx2");
  expect_gelu_exact(ops::gelu_erf, "dispatched");
}

TEST(Ops, ExpIsWithinAnUlpOrTwo) {
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    ASSERT_NEAR(ops::exp_approx(x) / want, 1.0, 3e-7) << x;
  }
}

TEST(Ops, SoftmaxSumsToOneAndMaskedEntriesAreZero) {
  std::vector<float> x = {1.0f, -INFINITY, 3.0f, 2.0f, -INFINITY, 0.5f, -100.0f, 2.5f, 1.5f};
  ops::softmax(x.data(), static_cast<int64_t>(x.size()));
  double sum = 0;
  for (float v : x) sum += v;
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_EQ(x[1], 0.0f);
  EXPECT_EQ(x[4], 0.0f);
  const double z = std::exp(1.0 - 3) + 1 + std::exp(2.0 - 3) + std::exp(0.5 - 3) + std::exp(-103.0) +
                   std::exp(2.5 - 3) + std::exp(1.5 - 3);
  EXPECT_NEAR(x[2], 1.0 / z, 1e-7);
  EXPECT_NEAR(x[7], std::exp(-0.5) / z, 1e-7);
}

// The F16 KV-cache rows: the F16C path equals the scalar definition
// (f32_to_f16 / f16_to_f32) bit for bit on conversion, and to float
// round-off on dot and axpy; odd lengths exercise the tails.
TEST(Ops, HalfPrecisionRowsMatchTheScalarDefinition) {
  std::vector<float> a(1003), x(1003);
  for (size_t i = 0; i < a.size(); ++i) {
    a[i] = std::sin(0.37f * static_cast<float>(i)) * 3.0f;
    x[i] = std::cos(0.11f * static_cast<float>(i)) * 60000.0f / static_cast<float>(i + 1);  // near f16's range, and subnormals
  }
  std::vector<uint16_t> h(x.size());
  ops::to_f16(x.data(), h.data(), static_cast<int64_t>(x.size()));
  double want_dot = 0, magnitude = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(h[i], f32_to_f16(x[i])) << i;
    want_dot += static_cast<double>(a[i]) * f16_to_f32(h[i]);
    magnitude += std::fabs(static_cast<double>(a[i]) * f16_to_f32(h[i]));
  }
  const float d = ops::dot_f16(a.data(), h.data(), static_cast<int64_t>(a.size()));
  EXPECT_NEAR(d, want_dot, 1e-6 * magnitude);
  std::vector<float> y(a.size(), 1.0f);
  ops::axpy_f16(y.data(), 0.5f, h.data(), static_cast<int64_t>(y.size()));
  for (size_t i = 0; i < y.size(); ++i) ASSERT_FLOAT_EQ(y[i], 1.0f + 0.5f * f16_to_f32(h[i])) << i;
}
