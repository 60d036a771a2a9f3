// Converting the checkpoints users have (DESIGN.md §4) into the project's two
// files, and re-quantizing GGUF files. Everything streams: tensors are read
// from memory-mapped sources a row chunk at a time, converted on the thread
// pool, appended to a gguf::Writer (temp file + rename), and the source pages
// are dropped again, so the resident set stays far below the model size.
// Every tensor's presence, type and shape is checked before the first byte is
// written; errors name the file and the tensor.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "formats/tensor_source.h"
#include "model/hf_llama.h"
#include "model/llama_file.h"
#include "model/vision.h"

namespace sg {

class ThreadPool;
struct Vocab;

// progress(bytes written so far, total bytes of tensor data)
using ByteProgress = std::function<void(uint64_t, uint64_t)>;

// ---------------------------------------------------------------- vision

// The three checkpoints of the image side: EVA ViT (LAVIS eva_vit_g.pth; keys
// with or without "visual_encoder."), the BLIP-2 Q-Former checkpoint
// (Qformer.*, query_tokens, ln_vision.*) and the SkinGPT-4/MiniGPT-4
// checkpoint holding llama_proj.*.
struct VisionSources {
  TensorSet vit, qformer, proj;
};

struct VisionOptions {
  int64_t vit_blocks = 0;  // blocks used; 0 = all but the last (MiniGPT-4: 39 of EVA ViT-g's 40)
  int64_t vit_heads = 0;   // 0 = from the width (1408 → 16, 1024 → 16, 768 → 12), else required
  int64_t qf_heads = 0;    // 0 = from the width (768 → 12), else required
  std::optional<float> vit_eps, ln_vision_eps, qf_eps;  // defaults 1e-6, 1e-5, 1e-12 (DESIGN.md §2)
  // Round Linear/conv biases through fp16 as SkinGPT-4's convert_weights_to_fp16
  // does (they stay F32 in the file). Off by default.
  bool fp16_biases = false;
};

// Reads sizes from tensor shapes (width from cls_token, patch from the patch
// embedding, image size from pos_embed, MLP from fc1, Q-Former sizes, query
// count, cross-attention layers, projection width). Head counts are not in
// any checkpoint: known widths or the options. `notes` gets one line per
// choice worth telling the user.
VisionConfig infer_vision_config(const VisionSources& s, const VisionOptions& o, std::vector<std::string>* notes);

// Writes the vision GGUF (docs/vision-gguf.md) with matrices of `type`
// (f32, f16, bf16 or q8_0).
void convert_vision(const VisionSources& s, const VisionConfig& c, DType type, const VisionOptions& o,
                    const std::string& out, const std::string& name, ThreadPool& pool,
                    const ByteProgress& progress = {});

// ---------------------------------------------------------------- LLM

// Writes a standard llama GGUF from a Hugging Face folder: Q/K rows permuted
// to GGUF's RoPE layout, rotary_emb.inv_freq ignored (recomputed from θ),
// tokenizer keys only when `vocab` is given.
void convert_hf_llama(const HfLlama& src, const QuantScheme& scheme, const Vocab* vocab, const std::string& out,
                      const std::string& name, ThreadPool& pool, const ByteProgress& progress = {},
                      std::vector<std::string>* notes = nullptr);

// Every check convert_hf_llama makes before writing (tensor presence, types,
// shapes against config.json, unusable extra tensors), without writing.
void check_hf_llama(const HfLlama& src, const QuantScheme& scheme, std::vector<std::string>* notes = nullptr);

// ---------------------------------------------------------------- quantize

bool vision_type_allowed(DType t);  // f32, f16, bf16, q8_0

struct QuantizeReport {
  std::string arch;
  uint64_t tensors_converted = 0, tensors_copied = 0;
  std::vector<std::string> notes;
};

// Rewrites a llama or skingpt_vision GGUF with another type: `type` is a
// QuantScheme name (f32 f16 bf16 q8_0 q4_0 q4_k q6_k q4_k_m). Metadata is
// copied (general.file_type updated). Refuses out == in (also the same inode).
QuantizeReport quantize_gguf(const std::string& in, const std::string& out, const std::string& type,
                             ThreadPool& pool, const ByteProgress& progress = {});

// llama.cpp's LLAMA_FTYPE number for a scheme (0 F32, 1 F16, 2 Q4_0, 7 Q8_0,
// 14 Q4_K_S, 15 Q4_K_M, 18 Q6_K, 32 BF16).
uint32_t llama_ftype(const QuantScheme& s);
// Bytes of tensor data (each tensor padded to `alignment`) of a llama file of
// this shape and scheme — the file size minus header and metadata.
uint64_t llama_tensor_data_bytes(const LlamaConfig& c, const QuantScheme& s, uint64_t alignment = 32);

// How MODEL_DIR/llm.gguf refers to a GGUF the user already has: a symlink when
// it is on the same filesystem as the output folder, else a copy (or a copy
// whenever force_copy). Returns "symlink", "copy" or "already in place".
std::string place_llm_gguf(const std::string& src, const std::string& dst, bool force_copy,
                           const ByteProgress& progress = {});

}  // namespace sg
