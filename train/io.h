// Files of the trainer: the project's GGUF model files (export, and import of
// a model folder as a starting point) and training checkpoints.
//
// A checkpoint (torch::serialize archive, conventionally checkpoint.pt) holds
//   meta       JSON: format, stage, step, seed, model config and parts, class
//              names, --init sources, trainable names, tensor names
//   vocab      the tokenizer (uint8 blob), when the model has an LLM
//   t0..tN     the parameters (all, or only the trainable ones when slim)
//   optimizer  AdamW state (moments and step counts), nested archive
// Data order and augmentation derive from (seed, step), so seed + step are
// the whole random state: a resumed run repeats an uninterrupted one.
#pragma once
#include <ATen/ATen.h>

#include <memory>
#include <string>
#include <vector>

#include "train/model.h"

namespace torch::serialize { class InputArchive; }
namespace torch::optim { class Optimizer; }

namespace sg::train {

// ------------------------------------------------------------------ GGUF files

// Writes dir/vision.gguf (when the vision side is complete) and dir/llm.gguf
// (when the LLM exists; the tokenizer is embedded when vocab is given).
// Returns the paths written. Matrices get vision_type / llm_scheme.
std::vector<std::string> export_model(const Net& net, const Vocab* vocab, const std::string& dir, DType vision_type,
                                      const QuantScheme& llm_scheme, const std::string& name);

// What a model folder, a vision.gguf or an llm.gguf holds.
struct GgufSource {
  std::string vision_path, llm_path;  // empty when absent
  ModelConfig config;                 // parts present are set
  bool has_vocab = false;
  Vocab vocab;
};
GgufSource open_gguf_source(const std::string& path);  // a folder or a .gguf file
// Copies every tensor of the source into the matching parameter of net
// (dequantized to f32; Q/K rows un-permuted back to Hugging Face's layout).
// Returns how many tensors were copied; sg::Error on a shape mismatch.
int64_t load_gguf_weights(Net& net, const GgufSource& src);

// ------------------------------------------------------------------ checkpoints

struct CheckpointMeta {
  std::string stage;
  int64_t step = 0;
  uint64_t seed = 0;
  ModelConfig config;
  std::vector<std::string> classes, init, trainable;
  bool slim = false;
};

void write_checkpoint(const std::string& path, const CheckpointMeta& meta, const Net& net, const Vocab* vocab,
                      const torch::optim::Optimizer* optimizer);

// An --init / --resume source: a model folder, a .gguf file or a checkpoint.
struct Source {
  std::string path;
  ModelConfig config;  // parts present are set
  bool has_vocab = false;
  Vocab vocab;
  std::vector<std::string> classes;
  bool is_checkpoint = false;
  // Checkpoints only.
  std::string stage;
  int64_t step = 0;
  bool slim = false;
  std::vector<std::string> init;
  std::vector<std::string> names;
  std::vector<at::Tensor> tensors;
  bool has_optimizer = false;
  std::shared_ptr<torch::serialize::InputArchive> optimizer;
  // GGUF only.
  GgufSource gguf;
};
Source read_source(const std::string& path, at::Device device = at::kCPU);
// Copies the source's tensors into the parameters net has (names and shapes
// must agree); returns how many were copied.
int64_t load_source_weights(Net& net, const Source& s);

}  // namespace sg::train
