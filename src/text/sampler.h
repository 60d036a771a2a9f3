// Next-token choice from logits: greedy, or temperature + top-k + top-p with
// a repetition penalty, reproducible from a seed. The pipeline follows
// Hugging Face's order: penalty → temperature → top-k → top-p → draw.
#pragma once
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace sg {

struct SamplerParams {
  float temperature = 1.0f;   // <= 0 means greedy
  int32_t top_k = 0;          // 0 = off
  float top_p = 1.0f;         // 1 = off
  float repetition_penalty = 1.0f;  // 1 = off; HF/CTRL style (divide positive, multiply negative)
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerParams p);
  // `logits` is modified in place. `history` are the ids the penalty applies to.
  int32_t sample(std::span<float> logits, std::span<const int32_t> history);
  const SamplerParams& params() const { return p_; }

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> cand_;
  std::vector<uint8_t> seen_;
};

int32_t argmax(std::span<const float> logits);

}  // namespace sg
