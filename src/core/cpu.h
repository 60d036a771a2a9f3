// CPU feature detection (CPUID + XGETBV): which SIMD paths this machine and
// its operating system can run.
#pragma once

namespace sg {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vnni = false, avx512bf16 = false;

  // Everything the "avx2" kernels use: AVX2 + FMA + F16C.
  bool has_avx2_path() const { return avx2 && fma && f16c; }
  // Everything the "avx512vnni" kernels use (BF16 is optional, checked separately).
  bool has_avx512_path() const {
    return has_avx2_path() && avx512f && avx512bw && avx512vl && avx512dq && avx512vnni;
  }
};

// Detected once; safe to call from any thread.
const CpuFeatures& cpu_features();

}  // namespace sg
