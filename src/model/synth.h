// Random-weight model files of any shape, so speed and memory can be measured
// at real sizes (7B, 13B) without real weights. Quantized tensors are filled
// with random blocks directly (random codes, small finite scales): the kernels
// do the same work as on real weights, and a 13B file takes seconds, not the
// minutes a real quantization pass would.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "model/llama_file.h"

namespace sg {

struct Vocab;

// progress(done_bytes, total_bytes)
void synth_llama(const std::string& path, const LlamaConfig& c, const QuantScheme& s,
                 const Vocab* vocab, uint64_t seed,
                 const std::function<void(uint64_t, uint64_t)>& progress = {});

// Fills n elements of type t with random data of roughly N(0, sigma²) values.
void fill_random(DType t, void* dst, int64_t n, float sigma, uint64_t seed);

}  // namespace sg

namespace sg {
struct VisionConfig;
// A random-weight vision file (docs/vision-gguf.md) with matrices of type t.
void synth_vision(const std::string& path, const VisionConfig& c, DType t, uint64_t seed,
                  const std::function<void(uint64_t, uint64_t)>& progress = {});
}  // namespace sg
