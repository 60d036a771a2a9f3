// PyTorch checkpoints as torch.save writes them (.pth, .pt, pytorch_model.bin):
// a zip archive "<root>/data.pkl" + "<root>/data/<key>" + "<root>/version".
// data.pkl is read with the restricted unpickler (pickle.h); each tensor's
// bytes are the stored member "<root>/data/<storage key>", mapped zero-copy.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "formats/mapped_file.h"
#include "formats/pickle.h"
#include "formats/tensor_source.h"

namespace sg {

class TorchCheckpoint {
 public:
  static constexpr uint64_t kMaxPickleBytes = 256ull << 20;
  static constexpr int kMaxDepth = 64;  // nesting of dicts/lists walked to find tensors

  // Throws sg::Error "<path>: <problem>" for anything that is not a readable
  // torch.save zip (including the pre-1.6 non-zip format, refused with advice).
  static std::unique_ptr<TorchCheckpoint> open(const std::string& path);
  // Same over caller-owned bytes that must outlive the object (fuzzing, tests).
  static std::unique_ptr<TorchCheckpoint> open_memory(const uint8_t* data, size_t size, std::string name);

  const std::string& path() const { return path_; }
  const std::string& root() const { return root_; }  // the archive's top folder
  const pickle::Pickle& pickle() const { return pickle_; }
  // Every tensor reachable from the pickle's root through dicts, lists and
  // tuples, named by its path: "model/query_tokens", "optimizer/state/0/exp_avg".
  // Non-contiguous tensors are listed with `problem` set.
  const std::vector<SrcTensor>& tensors() const { return tensors_; }
  // A value by '/'-separated path of dict keys and list indices ("epoch",
  // "optimizer/param_groups/0/lr"); nullptr if absent.
  const pickle::Node* value(const std::string& path) const;

 private:
  TorchCheckpoint() = default;
  void parse(const uint8_t* data, uint64_t size);
  std::string path_, root_;
  std::shared_ptr<const MappedFile> file_;
  pickle::Pickle pickle_;
  std::vector<SrcTensor> tensors_;
};

}  // namespace sg
