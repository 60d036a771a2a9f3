// Matmul kernels: float weights against a double-precision reference, every
// SIMD path against the scalar path (all types, odd shapes, m = 1..128,
// 1 and 2 threads), gemm_f32_nt against a naive product.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/matmul.h"
#include "core/matmul_kernels.h"
#include "core/quant.h"
#include "core/threads.h"

namespace {

using sg::DType;

std::vector<float> gaussian(size_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// Activations with a few large outlier channels, like LLM hidden states.
std::vector<float> activations(int64_t m, int64_t k, uint32_t seed) {
  auto x = gaussian(static_cast<size_t>(m * k), seed);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t c = 5; c < k; c += 97) x[i * k + c] *= 20.0f;
  return x;
}

struct Weights {
  DType t;
  int64_t rows, cols;
  std::vector<uint8_t> data;
  std::vector<float> deq;  // what the stored weights mean, as float
  sg::WeightView view() const { return {t, data.data(), rows, cols}; }
};

Weights make_weights(DType t, int64_t rows, int64_t cols, uint32_t seed) {
  Weights w{t, rows, cols, {}, {}};
  const auto f = gaussian(static_cast<size_t>(rows * cols), seed, 0.05f);
  const size_t rb = sg::row_bytes(t, cols);
  w.data.resize(rb * rows + 64);
  w.deq.resize(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    sg::quantize_row(t, f.data() + r * cols, w.data.data() + r * rb, cols);
    sg::dequantize_row(t, w.data.data() + r * rb, w.deq.data() + r * cols, cols);
  }
  return w;
}

struct Ref {
  std::vector<double> y;    // exact product with the stored weights
  std::vector<double> abs;  // sum_c |x||w|: the scale of rounding errors
};

Ref reference(const std::vector<float>& x, const std::vector<float>& w, int64_t m, int64_t n, int64_t k,
              bool round_x_to_bf16 = false) {
  Ref r;
  r.y.resize(static_cast<size_t>(m * n));
  r.abs.resize(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, a = 0;
      for (int64_t c = 0; c < k; ++c) {
        double xv = x[i * k + c];
        if (round_x_to_bf16) xv = sg::bf16_to_f32(sg::f32_to_bf16(x[i * k + c]));
        s += xv * w[j * k + c];
        a += std::fabs(xv * w[j * k + c]);
      }
      r.y[i * n + j] = s;
      r.abs[i * n + j] = a;
    }
  return r;
}

std::vector<float> run_matmul(const char* path, const Weights& w, const std::vector<float>& x, int64_t m,
                              int threads) {
  EXPECT_TRUE(sg::force_simd_path(path)) << path;
  sg::ThreadPool pool(threads);
  std::vector<float> y(static_cast<size_t>(m * w.rows), NAN);
  sg::matmul(w.view(), x.data(), m, y.data(), pool);
  return y;
}

// Largest |a - b| / scale over all elements.
double max_scaled_diff(const std::vector<float>& a, const std::vector<float>& b, const std::vector<double>& scale) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - double(b[i]));
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d / std::max(scale[i], 1e-30));
  }
  return worst;
}
double max_scaled_diff(const std::vector<float>& a, const std::vector<double>& b, const std::vector<double>& scale) {
  std::vector<float> bf(b.begin(), b.end());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double(a[i]) - b[i]);
    if (std::isnan(d)) return INFINITY;
    worst = std::max(worst, d / std::max(scale[i], 1e-30));
  }
  return worst;
}

double rel_norm_err(const std::vector<float>& y, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    num += (y[i] - ref[i]) * (y[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return std::sqrt(num / den);
}

class RestorePath : public ::testing::Test {
 protected:
  void SetUp() override { saved_ = sg::simd_path(); }
  void TearDown() override { sg::force_simd_path(saved_.c_str()); }
  std::string saved_;
};

using MatmulPaths = RestorePath;
using MatmulAccuracy = RestorePath;
using MatmulSimd = RestorePath;
using MatmulGemm = RestorePath;

TEST_F(MatmulPaths, ForceAndQuery) {
  const auto paths = sg::available_simd_paths();
  ASSERT_FALSE(paths.empty());
  EXPECT_STREQ(paths.front(), "scalar");
  for (const char* p : paths) {
    EXPECT_TRUE(sg::force_simd_path(p));
    EXPECT_STREQ(sg::simd_path(), p);
  }
  EXPECT_FALSE(sg::force_simd_path("neon"));
  EXPECT_FALSE(sg::force_simd_path(""));
  std::printf("  paths on this CPU:");
  for (const char* p : paths) std::printf(" %s", p);
  std::printf("\n");
}

// F32 weights: every path equals the double-accumulated product to float
// round-off: per element |y - ref| <= 1e-5 * (|ref| + rms(ref)) (numpy's
// allclose with rtol 1e-5 and atol 1e-5 of the typical output), and 2e-6
// relative in norm.
TEST_F(MatmulAccuracy, F32MatchesDoubleReference) {
  const int64_t n = 75, k = 4096 + 33;
  const Weights w = make_weights(DType::F32, n, k, 1);
  for (int64_t m : {1, 3, 17, 128}) {
    const auto x = activations(m, k, 2);
    const Ref ref = reference(x, w.deq, m, n, k);
    double ms = 0;
    for (double v : ref.y) ms += v * v;
    const double rms = std::sqrt(ms / ref.y.size());
    std::vector<double> scale(ref.y.size());
    for (size_t i = 0; i < scale.size(); ++i) scale[i] = std::fabs(ref.y[i]) + rms;
    for (const char* p : sg::available_simd_paths()) {
      for (int threads : {1, 2}) {
        const auto y = run_matmul(p, w, x, m, threads);
        const double e = max_scaled_diff(y, ref.y, scale);
        EXPECT_LE(e, 1e-5) << p << " m=" << m << " threads=" << threads;
        EXPECT_LE(rel_norm_err(y, ref.y), 2e-6) << p << " m=" << m;
        if (threads == 1 && m == 128) std::printf("  %s: worst %.2e, norm %.2e\n", p, e, rel_norm_err(y, ref.y));
      }
    }
  }
}

// Quantized weights: the only error besides float round-off is the 8-bit
// quantization of the activations. With the outlier channels, measured
// relative norm errors are 0.96% for Q8_0/Q4_0 (Q8_0 activations, one scale
// per 32) and 2.2% for Q4_K/Q6_K (Q8_K activations, one scale per 256, as in
// ggml). F16 is exact up to round-off.
TEST_F(MatmulAccuracy, QuantTypesCloseToFloatMath) {
  struct C {
    DType t;
    int64_t k;
    double bound;
  } cases[] = {{DType::F16, 320, 2e-6},   {DType::Q8_0, 1024, 0.013}, {DType::Q4_0, 1024, 0.013},
               {DType::Q4_K, 1024, 0.028}, {DType::Q6_K, 1024, 0.028}};
  for (const auto& c : cases) {
    const int64_t n = 33, m = 5;
    const Weights w = make_weights(c.t, n, c.k, 3);
    const auto x = activations(m, c.k, 4);
    const Ref ref = reference(x, w.deq, m, n, c.k);
    for (const char* p : sg::available_simd_paths()) {
      const auto y = run_matmul(p, w, x, m, 1);
      const double e = rel_norm_err(y, ref.y);
      EXPECT_LE(e, c.bound) << sg::traits(c.t).name << " " << p;
      if (std::string(p) == "scalar") std::printf("  %-5s rel error vs float math %.5f\n", std::string(sg::traits(c.t).name).c_str(), e);
    }
  }
}

// Every SIMD path equals the scalar path up to float summation order. The
// activation codes are bit-identical across paths, so the bound is tight:
// 2e-6 * sum|x w| per element (one wrong element alone would be ~1e-3).
// BF16 on AVX-512 may round the activations to bf16 (vdpbf16ps): then it must
// match the product with bf16-rounded activations to the same 2e-6, and be
// within 2^-8 * sum|x w| of the exact product.
TEST_F(MatmulSimd, EveryPathMatchesScalar) {
  const auto paths = sg::available_simd_paths();
  if (paths.size() < 2) GTEST_SKIP() << "no SIMD path on this CPU";
  struct C {
    DType t;
    int64_t k;
  } cases[] = {{DType::F32, 203},  {DType::F16, 233},   {DType::BF16, 263}, {DType::BF16, 264}, {DType::Q8_0, 32 * 13},
               {DType::Q4_0, 32 * 13}, {DType::Q4_K, 256 * 3}, {DType::Q6_K, 256 * 3}};
  for (const auto& c : cases) {
    for (int64_t n : {1, 67}) {
      const Weights w = make_weights(c.t, n, c.k, 10 + static_cast<uint32_t>(n));
      for (int64_t m : {1, 2, 3, 4, 5, 9, 17, 24, 128}) {
        const auto x = activations(m, c.k, 20 + static_cast<uint32_t>(m));
        const auto ys = run_matmul("scalar", w, x, m, 1);
        const Ref ref = reference(x, w.deq, m, n, c.k);
        Ref refb;
        if (c.t == DType::BF16) refb = reference(x, w.deq, m, n, c.k, true);
        for (const char* p : paths) {
          if (std::string(p) == "scalar") continue;
          for (int threads : {1, 2}) {
            const auto y = run_matmul(p, w, x, m, threads);
            const std::string what = std::string(sg::traits(c.t).name) + " " + p + " n=" + std::to_string(n) +
                                     " m=" + std::to_string(m) + " threads=" + std::to_string(threads);
            const double d_scalar = max_scaled_diff(y, ys, ref.abs);
            if (c.t != DType::BF16) {
              EXPECT_LE(d_scalar, 2e-6) << what;
            } else {
              const double d_bf = max_scaled_diff(y, refb.y, refb.abs);
              EXPECT_TRUE(d_scalar <= 2e-6 || d_bf <= 2e-6) << what << " vs scalar " << d_scalar << " vs bf16-x " << d_bf;
              EXPECT_LE(max_scaled_diff(y, ref.y, ref.abs), std::ldexp(1.0, -8)) << what;
            }
          }
        }
      }
    }
  }
}

// Longer rows (more blocks per dot, several K tiles in the packed kernels).
TEST_F(MatmulSimd, LongRowsMatchScalar) {
  const auto paths = sg::available_simd_paths();
  if (paths.size() < 2) GTEST_SKIP() << "no SIMD path on this CPU";
  for (DType t : {DType::F32, DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    const int64_t k = 4096 + 512, n = 45;
    const Weights w = make_weights(t, n, k, 5);
    for (int64_t m : {1, 9, 40}) {
      const auto x = activations(m, k, 6);
      const auto ys = run_matmul("scalar", w, x, m, 1);
      const Ref ref = reference(x, w.deq, m, n, k);
      for (const char* p : paths) {
        const auto y = run_matmul(p, w, x, m, 2);
        EXPECT_LE(max_scaled_diff(y, ys, ref.abs), 2e-6) << sg::traits(t).name << " " << p << " m=" << m;
      }
    }
  }
}

// Extreme codes: constant weights and activations of full magnitude make
// every integer product maximal (e.g. nibble 15 x 127, 6-bit 63 x 127), which
// would expose int16 overflow in the kernels' partial sums.
TEST_F(MatmulSimd, ExtremeCodesMatchScalar) {
  const auto paths = sg::available_simd_paths();
  if (paths.size() < 2) GTEST_SKIP() << "no SIMD path on this CPU";
  const int64_t k = 512, n = 8;
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    for (float wsign : {1.0f, -1.0f}) {
      Weights w{t, n, k, {}, {}};
      const size_t rb = sg::row_bytes(t, k);
      w.data.resize(rb * n + 64);
      w.deq.resize(static_cast<size_t>(n * k));
      std::vector<float> f(static_cast<size_t>(k));
      for (int64_t r = 0; r < n; ++r) {
        // Odd rows: constant (Q8_0 codes 127). Even rows: one -1 per 16 and
        // +31/32 elsewhere, which gives the largest codes of the other
        // types (Q4_0 nibble 15, Q4_K 15, Q6_K 63).
        for (int64_t c = 0; c < k; ++c) f[c] = wsign * (r % 2 ? 1.0f : (c % 16 ? 0.96875f : -1.0f));
        sg::quantize_row(t, f.data(), w.data.data() + r * rb, k);
        sg::dequantize_row(t, w.data.data() + r * rb, w.deq.data() + r * k, k);
      }
      for (float xs : {1.0f, -1.0f}) {
        for (int64_t m : {1, 16, 40}) {
          std::vector<float> x(static_cast<size_t>(m * k), xs);
          const auto ys = run_matmul("scalar", w, x, m, 1);
          const Ref ref = reference(x, w.deq, m, n, k);
          for (const char* p : paths) {
            const auto y = run_matmul(p, w, x, m, 1);
            EXPECT_LE(max_scaled_diff(y, ys, ref.abs), 2e-6)
                << sg::traits(t).name << " " << p << " m=" << m << " wsign=" << wsign << " xs=" << xs;
          }
        }
      }
    }
  }
}

// Many activation rows: the packed path splits them over several tasks.
TEST_F(MatmulSimd, ManyRowsMatchScalar) {
  const auto paths = sg::available_simd_paths();
  if (paths.size() < 2) GTEST_SKIP() << "no SIMD path on this CPU";
  for (DType t : {DType::F32, DType::BF16, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
    const int64_t k = 512, n = 37, m = 403;
    const Weights w = make_weights(t, n, k, 12);
    const auto x = activations(m, k, 13);
    const auto ys = run_matmul("scalar", w, x, m, 1);
    const Ref ref = reference(x, w.deq, m, n, k);
    for (const char* p : paths) {
      const auto y = run_matmul(p, w, x, m, 2);
      const double tol = t == DType::BF16 ? std::ldexp(1.0, -8) : 2e-6;  // vdpbf16ps rounds x to bf16
      EXPECT_LE(max_scaled_diff(y, ys, ref.abs), tol) << sg::traits(t).name << " " << p;
    }
  }
}

TEST_F(MatmulSimd, RepeatedCallsAndShrinkingShapes) {
  // Grow-only scratch: a big call, then smaller ones, must still be right.
  const Weights w = make_weights(DType::Q4_K, 40, 512, 8);
  sg::ThreadPool pool(2);
  for (const char* p : sg::available_simd_paths()) {
    ASSERT_TRUE(sg::force_simd_path(p));
    std::vector<float> first;
    for (int64_t m : {64, 1, 7, 64}) {
      const auto x = activations(m, 512, 9);
      std::vector<float> y(static_cast<size_t>(m * 40));
      sg::matmul(w.view(), x.data(), m, y.data(), pool);
      const Ref ref = reference(x, w.deq, m, 40, 512);
      EXPECT_LE(rel_norm_err(y, ref.y), 0.035) << p << " m=" << m;  // Q8_K activations, see above
      if (m == 64) {
        if (first.empty()) first = y;
        else EXPECT_EQ(first, y) << p;  // deterministic
      }
    }
  }
}

// After a warm-up call of each shape, further calls (same or smaller) do not
// allocate scratch memory on any path. (Scratch is per thread; one thread
// keeps the test deterministic.)
TEST_F(MatmulSimd, NoScratchAllocationAfterWarmUp) {
  sg::ThreadPool pool(1);
  const Weights wq = make_weights(DType::Q4_K, 64, 512, 3);
  const Weights wf = make_weights(DType::F16, 64, 512, 4);
  const auto x = activations(40, 512, 5);
  std::vector<float> y(40 * 64), c(40 * 40);
  for (const char* p : sg::available_simd_paths()) {
    ASSERT_TRUE(sg::force_simd_path(p));
    auto all = [&] {
      for (int64_t m : {40, 1, 7}) {
        sg::matmul(wq.view(), x.data(), m, y.data(), pool);
        sg::matmul(wf.view(), x.data(), m, y.data(), pool);
      }
      sg::gemm_f32_nt(x.data(), x.data(), c.data(), 40, 40, 512, 512, 512, 40, &pool);
    };
    all();
    const int64_t before = sg::kern::Scratch::allocation_count().load();
    for (int i = 0; i < 5; ++i) all();
    EXPECT_EQ(sg::kern::Scratch::allocation_count().load(), before) << p;
  }
}

TEST_F(MatmulSimd, DegenerateShapesAndErrors) {
  sg::ThreadPool pool(2);
  const Weights w = make_weights(DType::Q8_0, 4, 64, 1);
  std::vector<float> x(64 * 3, 1.0f), y(12, 5.0f);
  sg::matmul(w.view(), x.data(), 0, y.data(), pool);  // m = 0: nothing written
  EXPECT_EQ(y[0], 5.0f);
  sg::WeightView bad{DType::Q8_0, w.data.data(), 4, 48};
  EXPECT_THROW(sg::matmul(bad, x.data(), 1, y.data(), pool), std::exception);
  sg::WeightView unsupported{static_cast<DType>(3), w.data.data(), 4, 64};
  EXPECT_THROW(sg::matmul(unsupported, x.data(), 1, y.data(), pool), std::exception);
  // All-zero activations give exact zeros on every path.
  std::vector<float> z(64 * 3, 0.0f);
  for (const char* p : sg::available_simd_paths()) {
    ASSERT_TRUE(sg::force_simd_path(p));
    for (DType t : {DType::Q8_0, DType::Q4_0, DType::F16}) {
      const Weights wt = make_weights(t, 4, 64, 2);
      std::fill(y.begin(), y.end(), 5.0f);
      sg::matmul(wt.view(), z.data(), 3, y.data(), pool);
      for (float v : y) EXPECT_EQ(v, 0.0f) << p;
    }
  }
}

// gemm_f32_nt against a naive double product, with padded strides,
// accumulate, and with/without a pool.
TEST_F(MatmulGemm, MatchesNaive) {
  struct S {
    int64_t m, n, k;
  } shapes[] = {{1, 1, 1}, {3, 5, 7}, {17, 33, 88}, {2, 70, 5}, {130, 67, 300}, {257, 40, 88}, {64, 257, 257}};
  sg::ThreadPool pool(2);
  for (const auto& s : shapes) {
    const int64_t lda = s.k + 3, ldb = s.k + 5, ldc = s.n + 2;
    const auto a = gaussian(static_cast<size_t>(s.m * lda), 1);
    const auto b = gaussian(static_cast<size_t>(s.n * ldb), 2);
    const auto c0 = gaussian(static_cast<size_t>(s.m * ldc), 3);
    for (const char* p : sg::available_simd_paths()) {
      ASSERT_TRUE(sg::force_simd_path(p));
      for (bool acc : {false, true}) {
        for (sg::ThreadPool* pp : {static_cast<sg::ThreadPool*>(nullptr), &pool}) {
          auto c = c0;
          sg::gemm_f32_nt(a.data(), b.data(), c.data(), s.m, s.n, s.k, lda, ldb, ldc, pp, acc);
          double worst = 0;
          for (int64_t i = 0; i < s.m; ++i)
            for (int64_t j = 0; j < s.n; ++j) {
              double ref = acc ? c0[i * ldc + j] : 0.0, mag = std::fabs(ref);
              for (int64_t t = 0; t < s.k; ++t) {
                ref += double(a[i * lda + t]) * b[j * ldb + t];
                mag += std::fabs(double(a[i * lda + t]) * b[j * ldb + t]);
              }
              worst = std::max(worst, std::fabs(c[i * ldc + j] - ref) / mag);
            }
          EXPECT_LE(worst, 1e-6) << p << " " << s.m << "x" << s.n << "x" << s.k << " acc=" << acc;
          // Padding columns of C are untouched.
          for (int64_t i = 0; i < s.m; ++i)
            for (int64_t j = s.n; j < ldc; ++j) ASSERT_EQ(c[i * ldc + j], c0[i * ldc + j]);
        }
      }
    }
  }
}

}  // namespace
