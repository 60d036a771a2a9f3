// Internal interface between the matmul dispatcher (matmul.cpp) and the
// per-ISA kernel files (matmul.cpp's scalar kernels, matmul_avx2.cpp,
// matmul_avx512.cpp). Not part of the public API.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "core/dtype.h"
#include "core/matmul.h"

namespace sg::kern {

// ---------------------------------------------------------------------------
// Quantized activations. Each activation row of length k is quantized once
// per matmul call into this layout (one contiguous record per row):
//
//   qs   int8[k]            codes, round-to-nearest-even, in natural element
//                           order, except that a path may store the eight
//                           32-code sub-blocks of each 256-block in its own
//                           order (the AVX-512 path does for Q4_K weights, to
//                           match how its kernel unpacks nibbles)
//   d    float[k / B]       scale per block; B = 32 (weights Q8_0/Q4_0) or 256 (Q4_K/Q6_K)
//   aux  per weight type    block sums the SIMD kernels need:
//        Q8_0: int32[k/32] = -128 * sum(qs of the 32-block)   (weights are used as w+128)
//        Q4_0: int32[k/32] =   -8 * sum(qs of the 32-block)   (nibbles are used as q, not q-8)
//        Q4_K: int16[k/32] =        sum(qs of the 32-block)   (for the mins; in storage order)
//        Q6_K: int32[k/16] =  -32 * sum(qs of the 16-block)   (codes are used as q, not q-32)
//
// Every region is zero-padded: qs to a multiple of 512 codes (+64 bytes), d
// and aux to a multiple of 16 entries, so kernels may read whole 16-block
// groups past the end of a row.
//
// Codes are computed as in ggml: Q8_0-style blocks use d = amax/127 and
// q = rne(x/d); Q8_K-style blocks use d = max/-127 (sign of the largest
// magnitude) and q = min(127, rne(x*(-127/max))). The float d is kept exactly
// (not rounded to f16), so every ISA produces bit-identical codes.
struct ActLayout {
  size_t qs_off = 0, d_off = 0, aux_off = 0, row_bytes = 0;
  size_t qs_bytes = 0, d_count = 0, aux_count = 0, aux_elem = 0;  // used parts
  int block = 32;  // elements per d
};

inline size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

inline bool is_quant_type(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_K || t == DType::Q6_K;
}

inline ActLayout act_layout(DType t, int64_t k) {
  ActLayout L;
  const size_t kk = static_cast<size_t>(k);
  L.block = (t == DType::Q4_K || t == DType::Q6_K) ? 256 : 32;
  L.qs_bytes = kk;
  L.d_count = kk / L.block;
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0: L.aux_count = kk / 32; L.aux_elem = 4; break;
    case DType::Q4_K: L.aux_count = kk / 32; L.aux_elem = 2; break;
    case DType::Q6_K: L.aux_count = kk / 16; L.aux_elem = 4; break;
    default: break;
  }
  L.qs_off = 0;
  L.d_off = align_up(kk, 512) + 64;
  L.aux_off = L.d_off + align_up(L.d_count, 16) * 4;
  L.row_bytes = align_up(L.aux_off + align_up(L.aux_count, 16) * L.aux_elem, 64);
  return L;
}

struct QRow {
  const int8_t* qs;
  const float* d;
  const void* aux;
};
inline QRow qrow(const uint8_t* base, const ActLayout& L, int64_t i) {
  const uint8_t* r = base + static_cast<size_t>(i) * L.row_bytes;
  return {reinterpret_cast<const int8_t*>(r + L.qs_off), reinterpret_cast<const float*>(r + L.d_off),
          r + L.aux_off};
}

// Fills aux from qs (shared by all ISAs; cheap next to the matmul).
void fill_act_aux(DType t, const int8_t* qs, int64_t k, void* aux);

// ---------------------------------------------------------------------------
// A grow-only, 64-byte aligned buffer (per thread or per caller).
class Scratch {
 public:
  // Number of (re)allocations of any Scratch so far: lets tests check that
  // repeated calls of the same size allocate nothing.
  static std::atomic<int64_t>& allocation_count() {
    static std::atomic<int64_t> n{0};
    return n;
  }

  Scratch() = default;
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { std::free(p_); }
  uint8_t* get(size_t bytes) {
    if (bytes > cap_) {
      allocation_count().fetch_add(1, std::memory_order_relaxed);
      std::free(p_);
      cap_ = align_up(bytes + bytes / 4, 4096);
      p_ = static_cast<uint8_t*>(std::aligned_alloc(64, cap_));
      if (!p_) {
        cap_ = 0;
        throw std::bad_alloc();
      }
    }
    return p_;
  }

 private:
  uint8_t* p_ = nullptr;
  size_t cap_ = 0;
};

// ---------------------------------------------------------------------------
// What every SIMD path provides. Ranges are half-open.
//
// Few activation rows: row-dot kernels (qgemv / fgemv) read each weight row
// once and dot it with every activation row.
//
// Many activation rows (the "packed" path, optional): the activation rows are
// packed once per call into vectors of vec_rows rows (one SIMD lane per
// activation row, transposed so a lane walks along k); the kernel then
// broadcasts weight values and accumulates vec_rows outputs per instruction.
// Weights are only decoded (nibbles to bytes, f16 to f32) per tile, never
// transposed.
struct Isa {
  const char* name;
  // One activation row → qs and d (the dispatcher fills aux and padding).
  void (*quantize_act_row)(DType wt, const float* x, int64_t k, int8_t* qs, float* d);
  // Quantized weights: y[i*ldy + r] for r in [r0,r1), i in [0,m).
  void (*qgemv)(const WeightView& w, const uint8_t* acts, const ActLayout& L, int64_t m, int64_t r0, int64_t r1,
                float* y, int64_t ldy);
  // Float weights (F32/F16/BF16), ldb elements per weight row:
  // C[i*ldc + j] (+)= sum_k A[i*lda + k] * B[j][k] for i in [0,m), j in [j0,j1).
  void (*fgemv)(DType bt, const float* a, int64_t lda, const void* b, int64_t ldb, float* c, int64_t ldc,
                int64_t m, int64_t j0, int64_t j1, int64_t k, bool accumulate);

  // ---- packed path (vec_rows == 0: not available) ----
  int vec_rows;
  // Bytes of one packed activation vector for weight type wt and row length k.
  size_t (*pack_bytes)(DType wt, int64_t k);
  // Packs activation vector v (rows v*vec_rows ...) of either the float rows
  // x (lda) for float weights, or the quantized rows for quantized weights.
  void (*pack_acts)(DType wt, const float* x, int64_t lda, const uint8_t* qacts, const ActLayout& L, int64_t m,
                    int64_t k, int64_t v, uint8_t* out);
  // C[i*ldc + j] (+)= row i of the packed activations · weight row j, for the
  // activation vectors [v0,v1) (rows clipped to m) and weight rows [j0,j1).
  void (*gemm_packed)(DType wt, const void* w, size_t w_row_bytes, int64_t k, const uint8_t* packed,
                      size_t vec_bytes, int64_t v0, int64_t v1, int64_t m, int64_t j0, int64_t j1, float* c,
                      int64_t ldc, bool accumulate);
  int qgemm_min_m;  // activation rows from which quantized weights use the packed path
  int fgemm_min_m;  // same for float weights
};

extern const Isa kScalarIsa;
const Isa* avx2_isa();    // nullptr if not compiled in
const Isa* avx512_isa();  // nullptr if not compiled in

}  // namespace sg::kern
