// LLaMA-family decoder (LLaMA-1/2, Vicuna) over a standard llama GGUF file:
// RMSNorm, RoPE (GGUF's interleaved Q/K layout), grouped-query attention,
// SwiGLU, KV cache. Input is token ids or caller-supplied embeddings (the
// image path splices projected image features into the prompt).
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "core/matmul.h"
#include "formats/gguf.h"

namespace sg {

class ThreadPool;

struct LlamaConfig {
  int64_t n_vocab = 0;
  int64_t dim = 0;
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;
  int64_t ffn = 0;
  int64_t n_ctx_train = 0;
  int64_t rope_dim = 0;
  float rms_eps = 1e-5f;
  float rope_theta = 10000.0f;
  int64_t head_dim() const { return dim / n_heads; }
  int64_t kv_dim() const { return head_dim() * n_kv_heads; }
};

struct LlamaLayer {
  std::vector<float> attn_norm, ffn_norm;  // norms are always kept in f32
  WeightView wq, wk, wv, wo, w_gate, w_up, w_down;
};

class LlamaModel {
 public:
  // Opens the GGUF (loaded into memory by default, or mapped: gguf::Residency)
  // and checks every tensor's presence, type and shape against the metadata;
  // throws sg::Error naming the file and the tensor.
  static std::unique_ptr<LlamaModel> load(const std::string& path,
                                          gguf::Residency residency = gguf::Residency::Load);
  ~LlamaModel();

  const LlamaConfig& config() const { return cfg_; }
  const gguf::File& file() const { return *file_; }
  // Writes the embedding rows of ids into out [ids.size() × dim].
  void embed(std::span<const int32_t> ids, float* out) const;
  // Bytes of weights read for one decoded token (everything but the embedding table).
  uint64_t weight_bytes_per_token() const;

  std::vector<LlamaLayer> layers;
  WeightView tok_embd, output;
  std::vector<float> output_norm;

 private:
  LlamaModel() = default;
  std::unique_ptr<gguf::File> file_;
  LlamaConfig cfg_;
};

// How the KV cache stores keys and values. F32 keeps the reference's
// arithmetic exactly; F16 halves the cache (3.4 GB → 1.7 GB for a 13B model at
// 2048 positions) at ~1e-3 relative error in the stored keys and values.
// Auto: F16 when the F32 cache would pass 256 MiB, i.e. for real-size
// models, F32 for the small ones (and every reference check).
enum class KvType { Auto, F32, F16 };
std::optional<KvType> kv_type_from_name(std::string_view name);  // "auto", "f32", "f16"

// One conversation's state: KV cache and scratch buffers, sized once. The
// cache is allocated without being written, so the memory the process
// actually holds grows with the positions used, not with n_ctx.
class LlamaContext {
 public:
  LlamaContext(const LlamaModel& model, int64_t n_ctx, ThreadPool& pool, KvType kv = KvType::Auto);

  // Runs n new positions given as embeddings [n × dim]. Writes logits of the
  // last position (or, with all_logits, of every position) into `logits`.
  void eval_embeddings(const float* embd, int64_t n, bool all_logits = false);
  void eval_tokens(std::span<const int32_t> ids, bool all_logits = false);

  const std::vector<float>& logits() const { return logits_; }  // [n_out × n_vocab]
  int64_t n_past() const { return n_past_; }
  int64_t n_ctx() const { return n_ctx_; }
  KvType kv_type() const { return kv_f16_ ? KvType::F16 : KvType::F32; }
  uint64_t kv_bytes() const;  // the cache's full size at n_ctx
  void truncate(int64_t n) { n_past_ = std::min(n_past_, n); }  // drop later positions
  // Per-stage hooks for reference checks: the residual stream after each layer
  // and after the final norm, for the last eval call (off by default).
  bool keep_hidden = false;
  std::vector<std::vector<float>> hidden;

 private:
  void ensure_batch(int64_t n);
  void attention(int64_t layer, int64_t n);

  const LlamaModel& m_;
  ThreadPool& pool_;
  int64_t n_ctx_;
  int64_t n_past_ = 0;
  bool kv_f16_ = false;
  std::unique_ptr<float[]> k_f32_, v_f32_;      // [layer][pos][kv_dim], one of the two pairs
  std::unique_ptr<uint16_t[]> k_f16_, v_f16_;
  std::vector<float> x_, xn_, q_, k_, v_, att_, gate_, up_, logits_, rope_cos_, rope_sin_;
  std::vector<float> scores_;  // [threads][n_ctx]
  int64_t batch_cap_ = 0;
};

}  // namespace sg
