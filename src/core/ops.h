// Row-wise float32 operations of transformer layers. Written as plain loops
// the compiler vectorizes; all are memory-light next to the matmuls.
#pragma once
#include <cstdint>

namespace sg::ops {

// y = x / sqrt(mean(x²) + eps) * w     (LLaMA RMSNorm, fp32 statistics)
void rmsnorm(const float* x, const float* w, float* y, int64_t n, float eps);
// y = (x - mean) / sqrt(var + eps) * w + b   (biased variance, as PyTorch)
void layernorm(const float* x, const float* w, const float* b, float* y, int64_t n, float eps);
// In-place softmax over n values (max-subtracted, exp on SIMD lanes to ~1 ulp,
// the sum in double: PyTorch's fp32 softmax to round-off; −inf gives exactly 0).
void softmax(float* x, int64_t n);
void silu_mul(const float* gate, const float* up, float* y, int64_t n);  // y = silu(g)·u
// GELU with the exact (erf) form, x·Φ(x), to float round-off: erf from
// Abramowitz–Stegun 7.1.26 (|error| < 1.5e-7) and a branch-free exp, so the
// loop vectorizes (std::erf does not, and dominated the ViT-g encode).
void gelu_erf(float* x, int64_t n);
// exp(x) to ~1 ulp for x in [-87, 88] (clamped outside), branch-free.
float exp_approx(float x);
void add(float* y, const float* x, int64_t n);                         // y += x
float dot(const float* a, const float* b, int64_t n);
void axpy(float* y, float a, const float* x, int64_t n);               // y += a·x
// The same with x stored as IEEE half (an F16 KV cache); to_f16 rounds to
// nearest even. F16C lanes when the CPU has them.
float dot_f16(const float* a, const uint16_t* b, int64_t n);
void axpy_f16(float* y, float a, const uint16_t* x, int64_t n);
void to_f16(const float* x, uint16_t* y, int64_t n);

// RoPE tables for one position: cos/sin of pos·θ^(−2i/rope_dim), i < rope_dim/2,
// in the same float32 steps as Hugging Face's LlamaRotaryEmbedding.
void rope_table(int64_t pos, int64_t rope_dim, float theta, float* cos_out, float* sin_out);
// Rotates one head vector in GGUF's interleaved-pair layout (pairs (2i,2i+1)).
void rope_interleaved(float* x, int64_t rope_dim, const float* cos, const float* sin);

}  // namespace sg::ops
