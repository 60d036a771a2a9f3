// The project's vision GGUF convention (docs/vision-gguf.md): architecture
// "skingpt_vision", its metadata keys, tensor names and shapes, and the map
// from each tensor to its name in the original PyTorch checkpoints.
#pragma once
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/llama_file.h"
#include "model/vision.h"

namespace sg {

namespace gguf { class File; class Writer; }

inline constexpr const char* kVisionArch = "skingpt_vision";

// Every tensor of a vision file. Matrices get `weight_type` (falling back to
// Q8_0 then F32 where the row length does not fit the block); vectors, norms,
// tokens and position embeddings stay F32.
std::vector<TensorSpec> vision_tensor_specs(const VisionConfig& c, DType weight_type);

void write_vision_metadata(gguf::Writer& w, const VisionConfig& c, const std::string& name);
VisionConfig read_vision_config(const gguf::File& f);

// The state-dict name in a MiniGPT-4/SkinGPT-4 model ("visual_encoder.blocks.0.norm1.weight",
// "Qformer.bert.encoder.layer.0.attention.self.query.weight", "llama_proj.bias", ...).
std::string vision_source_name(const std::string& gguf_name);

}  // namespace sg
