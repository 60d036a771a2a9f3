// The SkinGPT-4 image side: EVA ViT (first `depth` blocks), ln_vision, the
// BLIP-2 Q-Former over learned queries, and the linear projection into the
// LLM's embedding space. Sizes come from the vision GGUF's metadata
// (docs/vision-gguf.md), so the tiny reference model and ViT-g/14 run the
// same code.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/matmul.h"
#include "formats/gguf.h"

namespace sg {

class ThreadPool;

struct VisionConfig {
  int64_t image_size = 224, patch_size = 14;
  int64_t vit_width = 1408, vit_depth = 39, vit_heads = 16, vit_ffn = 6144;
  float vit_eps = 1e-6f, ln_vision_eps = 1e-5f;
  int64_t qf_width = 768, qf_depth = 12, qf_heads = 12, qf_ffn = 3072, qf_cross_freq = 2, n_query = 32;
  float qf_eps = 1e-12f;
  int64_t llm_dim = 5120;
  float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
  float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
  int64_t n_patches() const { return (image_size / patch_size) * (image_size / patch_size); }
  int64_t n_tokens() const { return n_patches() + 1; }
  bool has_cross(int64_t layer) const { return layer % qf_cross_freq == 0; }
  // Multiply-adds of one image through ViT + Q-Former + projection, ×2.
  double flops() const;
};

struct Linear {
  WeightView w;
  std::vector<float> b;  // empty when the layer has no bias
};
struct Norm {
  std::vector<float> w, b;
};

struct VitBlock {
  Norm norm1, norm2;
  Linear qkv;                       // bias = cat(q_bias, 0, v_bias)
  Linear proj, fc1, fc2;
};
struct QformerLayer {
  Linear self_q, self_k, self_v, self_out;
  Norm self_norm;
  bool has_cross = false;
  Linear cross_q, cross_k, cross_v, cross_out;
  Norm cross_norm;
  Linear ffn_up, ffn_down;
  Norm ffn_norm;
};

// Intermediate tensors, by the reference's names ("vit.blocks.0.out", ...).
using VisionTrace = std::function<void(const std::string& name, const float* data, size_t n)>;

struct EncodeTimings {
  double vit_ms = 0, qformer_ms = 0;
};

class VisionModel {
 public:
  // Opens the GGUF (loaded into memory by default, or mapped: gguf::Residency).
  static std::unique_ptr<VisionModel> load(const std::string& path,
                                           gguf::Residency residency = gguf::Residency::Load);
  ~VisionModel();
  const VisionConfig& config() const { return cfg_; }
  const gguf::File& file() const { return *file_; }

  // image: normalised CHW float [3 × size × size]. Returns the projected
  // query embeddings [n_query × llm_dim].
  std::vector<float> encode(const float* image, ThreadPool& pool, const VisionTrace& trace = {},
                            EncodeTimings* timings = nullptr) const;

  Linear patch_embed;  // [vit_width × 3·p·p], columns ordered (channel, row, col)
  std::vector<float> cls_token, pos_embed;  // [width], [n_tokens × width]
  std::vector<VitBlock> vit;
  Norm ln_vision;
  std::vector<float> query_tokens;  // [n_query × qf_width]
  Norm qf_embed_norm;
  std::vector<QformerLayer> qformer;
  Linear proj;

 private:
  VisionModel() = default;
  std::unique_ptr<gguf::File> file_;
  VisionConfig cfg_;
};

}  // namespace sg
