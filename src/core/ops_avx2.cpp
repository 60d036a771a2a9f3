// The AVX2 (+FMA) instances of core/vector_math.h, chosen at run time by ops.cpp.
#include "core/vector_math.h"

namespace sg::ops {

void gelu_erf_avx2(float* x, int64_t n) { lanes::gelu_rows<f32x8, i32x8>(x, n); }
void exp_shifted_avx2(float* x, int64_t n, float shift) { lanes::exp_shifted<f32x8, i32x8>(x, n, shift); }

}  // namespace sg::ops
