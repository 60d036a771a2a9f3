// Tensors as PyTorch checkpoints and safetensors files hold them: a name, an
// element type, a shape (outermost first) and bytes inside a memory-mapped
// file. Readers (torch_checkpoint.h, safetensors.h) produce these without
// copying; converters read them a row range at a time as float32.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "formats/mapped_file.h"

namespace sg {

enum class SrcType : uint8_t { F32, F16, BF16, F64, I64, I32, I16, I8, U8, Bool };

std::string_view src_type_name(SrcType t);  // "float32", "float16", "bfloat16", "int64", ...
size_t src_type_size(SrcType t);
bool src_type_is_float(SrcType t);          // F32, F16, BF16, F64

struct SrcTensor {
  std::string name;              // state-dict key; nesting levels joined by '/'
  SrcType type = SrcType::F32;
  std::vector<int64_t> shape;    // PyTorch order (outermost first); empty = 0-d
  const uint8_t* data = nullptr; // first element, inside `file`'s mapping (any alignment)
  uint64_t nbytes = 0;
  std::string problem;           // non-empty: why the bytes cannot be used (non-contiguous, ...)
  std::shared_ptr<const MappedFile> file;
  std::string origin;            // the file it came from, for messages

  int64_t numel() const;
  std::string shape_str() const;  // "[64, 3, 8, 8]"
};

// Converts elements [first, first + n) to float32. Float and integer types are
// converted (integers must fit a float exactly only in the caller's mind);
// throws sg::Error "<origin>: tensor '<name>' ..." on a range error or when the
// tensor has a problem.
void read_f32(const SrcTensor& t, int64_t first, int64_t n, float* out);
// Drops the mapped pages of elements [first, first + n) from this process.
void release(const SrcTensor& t, int64_t first, int64_t n);

// Tensors by name, gathered from one or several files (the files stay mapped
// while the set lives).
class TensorSet {
 public:
  std::string description;  // "eva_vit_g.pth", "llm/ (2 safetensors shards)": for messages
  void add(SrcTensor t);    // a second tensor of the same name throws
  const SrcTensor* find(std::string_view name) const;
  size_t size() const { return by_name_.size(); }
  const std::map<std::string, SrcTensor, std::less<>>& all() const { return by_name_; }

 private:
  std::map<std::string, SrcTensor, std::less<>> by_name_;
};

// Opens one checkpoint file of either kind, by its first bytes: a PyTorch zip
// (.pth/.bin/.pt), or safetensors. Names are the file's keys; with
// `state_dict_only`, a PyTorch checkpoint's tensors are those of its state
// dict: the top level if it holds tensors, else the first of 'model',
// 'state_dict', 'module' that does (prefix removed).
TensorSet open_tensor_file(const std::string& path, bool state_dict_only = true);

}  // namespace sg
