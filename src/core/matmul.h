// Matrix products against stored weights: y = x · Wᵀ, where W is a row-major
// [rows × cols] matrix in any supported DType (each row is one output feature,
// exactly as GGUF and PyTorch's Linear store it) and x is [m × cols] float32.
// Activations are quantized once per call to the weight type's dot partner
// (Q8_0 for Q4_0/Q8_0, Q8_K for Q4_K/Q6_K), then fused dequantize-dot kernels
// run with the best SIMD path the CPU has (AVX-512 VNNI, AVX2/FMA, scalar).
#pragma once
#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace sg {

class ThreadPool;

struct WeightView {
  DType type = DType::F32;
  const void* data = nullptr;
  int64_t rows = 0;  // output features
  int64_t cols = 0;  // input features (row length)
};

// y[i*rows + r] = sum_c x[i*cols + c] * W[r][c]   for i < m, r < rows.
// No allocation after the first call of a given size (scratch is reused).
//
// Precision: F32 and F16 weights use float32 arithmetic on the unrounded
// activations (measured error against a double-precision product below 1e-6
// of the output scale). Quantized weights see the 8-bit
// activation quantization too (relative error ~0.5-1% for Q8_0/Q4_0, whose
// activations get one scale per 32 values; ~1-2% for Q4_K/Q6_K, one scale per
// 256, as in ggml). BF16 weights with many activation rows on a CPU with
// AVX512_BF16 use vdpbf16ps, which rounds the activations to bf16 too: error
// <= 2^-8 * sum|x*w| (bf16 round-off); elsewhere BF16 behaves like F16.
void matmul(const WeightView& w, const float* x, int64_t m, float* y, ThreadPool& pool);

// Plain float32 C[m×n] = A[m×k] · B[n×k]ᵀ (+ C if accumulate); used for
// attention scores and anything not backed by a stored weight. pool may be
// nullptr (runs on the calling thread).
void gemm_f32_nt(const float* a, const float* b, float* c, int64_t m, int64_t n, int64_t k,
                 int64_t lda, int64_t ldb, int64_t ldc, ThreadPool* pool, bool accumulate = false);

// Which SIMD path the dispatcher chose: "avx512vnni", "avx2", "scalar".
const char* simd_path();
// Forces a path (tests compare every path with scalar); returns false if the
// CPU lacks it. The initial path is the best one the CPU has, or the one named
// by the environment variable SKINGPT_SIMD=scalar|avx2|avx512vnni.
bool force_simd_path(const char* name);
// The names of the paths this CPU can run, best last ("scalar" first).
std::vector<const char*> available_simd_paths();

}  // namespace sg
