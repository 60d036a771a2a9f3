// Block formats bit-compatible with GGUF/ggml, their quantizers (float32 →
// blocks) and dequantizers (blocks → float32), plus fp16/bf16 conversion.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace sg {

constexpr int kQK = 32;    // elements per Q4_0/Q8_0 block
constexpr int kQKK = 256;  // elements per K-quant super-block

#pragma pack(push, 1)
struct BlockQ8_0 { uint16_t d; int8_t qs[kQK]; };                 // 34 bytes
struct BlockQ4_0 { uint16_t d; uint8_t qs[kQK / 2]; };            // 18 bytes
struct BlockQ4_K { uint16_t d; uint16_t dmin; uint8_t scales[12]; uint8_t qs[kQKK / 2]; };  // 144
struct BlockQ6_K { uint8_t ql[kQKK / 2]; uint8_t qh[kQKK / 4]; int8_t scales[kQKK / 16]; uint16_t d; };  // 210
struct BlockQ8_K { float d; int8_t qs[kQKK]; int16_t bsums[kQKK / 16]; };  // 292
#pragma pack(pop)
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ4_0) == 18);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ6_K) == 210 && sizeof(BlockQ8_K) == 292);

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);     // round to nearest even, like numpy/PyTorch .half()
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);    // round to nearest even, like PyTorch .bfloat16()

// n must be a multiple of the type's block size (sg::Error otherwise). Every
// DType is allowed, Q8_K included; F32 is a copy. Q4_K and Q6_K search for
// error-minimising scales (single-threaded, ~10 M values/s for Q4_K: a
// converter should quantize rows in parallel).
void quantize_row(DType t, const float* x, void* y, int64_t n);
void dequantize_row(DType t, const void* x, float* y, int64_t n);

}  // namespace sg
