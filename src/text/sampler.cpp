#include "text/sampler.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace sg {

int32_t argmax(std::span<const float> logits) {
  return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

Sampler::Sampler(SamplerParams p) : p_(p), rng_(p.seed) {
  if (!(p.top_p > 0 && p.top_p <= 1)) throw Error("top-p must be in (0, 1]");
  if (p.top_k < 0) throw Error("top-k must be >= 0");
  if (!(p.repetition_penalty > 0)) throw Error("repetition penalty must be > 0");
  if (std::isnan(p.temperature)) throw Error("temperature must be a number");
}

int32_t Sampler::sample(std::span<float> logits, std::span<const int32_t> history) {
  if (p_.repetition_penalty != 1.0f) {
    // Applied once per distinct id, as HF's gather/scatter does.
    seen_.assign(logits.size(), 0);
    for (int32_t id : history) {
      if (id < 0 || static_cast<size_t>(id) >= logits.size() || seen_[id]) continue;
      seen_[id] = 1;
      float& l = logits[id];
      l = l < 0 ? l * p_.repetition_penalty : l / p_.repetition_penalty;
    }
  }
  if (p_.temperature <= 0) return argmax(logits);

  cand_.clear();
  for (size_t i = 0; i < logits.size(); ++i)
    cand_.emplace_back(logits[i] / p_.temperature, static_cast<int32_t>(i));
  auto by_logit = [](const auto& a, const auto& b) { return a.first > b.first; };
  size_t keep = cand_.size();
  if (p_.top_k > 0 && static_cast<size_t>(p_.top_k) < keep) {
    keep = p_.top_k;
    std::partial_sort(cand_.begin(), cand_.begin() + keep, cand_.end(), by_logit);
  } else {
    std::sort(cand_.begin(), cand_.end(), by_logit);
  }
  cand_.resize(keep);
  const float mx = cand_[0].first;
  double sum = 0;
  for (auto& c : cand_) sum += (c.first = std::exp(c.first - mx));
  if (p_.top_p < 1.0f) {
    // Smallest prefix whose mass reaches top_p (always at least one token).
    double cum = 0;
    size_t n = 0;
    while (n < cand_.size()) {
      cum += cand_[n++].first / sum;
      if (cum >= p_.top_p) break;
    }
    cand_.resize(n);
    sum = 0;
    for (auto& c : cand_) sum += c.first;
  }
  std::uniform_real_distribution<double> u(0.0, sum);
  double r = u(rng_), acc = 0;
  for (auto& c : cand_) {
    acc += c.first;
    if (r < acc) return c.second;
  }
  return cand_.back().second;
}

}  // namespace sg
