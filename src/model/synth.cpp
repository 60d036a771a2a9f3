#include "model/synth.h"

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "core/quant.h"
#include "formats/gguf.h"
#include "model/vision_file.h"

namespace sg {

void fill_random(DType t, void* dst, int64_t n, float sigma, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto* out = static_cast<uint8_t*>(dst);
  switch (t) {
    case DType::F32:
    case DType::F16:
    case DType::BF16: {
      std::normal_distribution<float> nd(0, sigma);
      for (int64_t i = 0; i < n; ++i) {
        const float x = nd(rng);
        if (t == DType::F32) std::memcpy(out + 4 * i, &x, 4);
        else {
          const uint16_t h = t == DType::F16 ? f32_to_f16(x) : f32_to_bf16(x);
          std::memcpy(out + 2 * i, &h, 2);
        }
      }
      return;
    }
    default: break;
  }
  // Random bytes for the codes, then valid scales written over them.
  const size_t bytes = row_bytes(t, n);
  for (size_t i = 0; i < bytes; i += 8) {
    const uint64_t r = rng();
    std::memcpy(out + i, &r, std::min<size_t>(8, bytes - i));
  }
  const int64_t blocks = n / traits(t).block_elems;
  const uint16_t d = f32_to_f16(sigma / 4), dmin = f32_to_f16(sigma / 8);
  for (int64_t b = 0; b < blocks; ++b) {
    switch (t) {
      case DType::Q8_0: reinterpret_cast<BlockQ8_0*>(out)[b].d = f32_to_f16(sigma / 40); break;
      case DType::Q4_0: reinterpret_cast<BlockQ4_0*>(out)[b].d = d; break;
      case DType::Q4_K: {
        auto& blk = reinterpret_cast<BlockQ4_K*>(out)[b];
        blk.d = f32_to_f16(sigma / 64);
        blk.dmin = dmin;
        break;
      }
      case DType::Q6_K: {
        auto& blk = reinterpret_cast<BlockQ6_K*>(out)[b];
        blk.d = f32_to_f16(sigma / 512);
        for (auto& s : blk.scales) s = static_cast<int8_t>(s & 0x3F);
        break;
      }
      default: break;
    }
  }
}

namespace {

// Declares and writes every tensor of specs with random contents: norm
// weights near 1, other vectors small, embedding tables N(0, 0.25), matrices
// N(0, 1/fan_in).
void write_random(gguf::Writer& w, const std::vector<TensorSpec>& specs, uint64_t seed,
                  const std::function<void(uint64_t, uint64_t)>& progress) {
  uint64_t total = 0, done = 0;
  for (const auto& t : specs) {
    w.add_tensor(t.name, t.type, t.dims);
    int64_t n = 1;
    for (auto d : t.dims) n *= d;
    total += row_bytes(t.type, n);
  }
  w.begin();
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& t = specs[i];
    int64_t n = 1;
    for (auto d : t.dims) n *= d;
    buf.resize(row_bytes(t.type, n));
    const bool norm_weight = t.name.find("norm") != std::string::npos && t.name.find(".weight") != std::string::npos;
    if (t.dims.size() == 1) {
      std::mt19937_64 rng(seed * 7919 + i);
      std::normal_distribution<float> nd(norm_weight ? 1.0f : 0.0f, norm_weight ? 0.05f : 0.02f);
      std::vector<float> v(n);
      for (auto& x : v) x = nd(rng);
      std::memcpy(buf.data(), v.data(), buf.size());
    } else {
      const bool table = t.name.find("token") != std::string::npos || t.name.find("pos_embed") != std::string::npos;
      fill_random(t.type, buf.data(), n, table ? 0.5f : 1.0f / std::sqrt(static_cast<float>(t.dims[0])),
                  seed * 1000003 + i);
    }
    w.write_tensor_data(buf.data(), buf.size());
    done += buf.size();
    if (progress) progress(done, total);
  }
}

}  // namespace

void synth_llama(const std::string& path, const LlamaConfig& c, const QuantScheme& s,
                 const Vocab* vocab, uint64_t seed,
                 const std::function<void(uint64_t, uint64_t)>& progress) {
  gguf::Writer w(path);
  write_llama_metadata(w, c, s, "synthetic (random weights)", vocab);
  write_random(w, llama_tensor_specs(c, s), seed, progress);
  w.finish();
}

void synth_vision(const std::string& path, const VisionConfig& c, DType t, uint64_t seed,
                  const std::function<void(uint64_t, uint64_t)>& progress) {
  gguf::Writer w(path);
  write_vision_metadata(w, c, "synthetic (random weights)");
  write_random(w, vision_tensor_specs(c, t), seed, progress);
  w.finish();
}

}  // namespace sg
