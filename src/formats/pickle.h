// A restricted unpickler for PyTorch checkpoints (data.pkl inside a torch.save
// zip). It interprets the protocol 2–5 opcodes torch.save emits and builds a
// plain value tree; it never imports or calls anything. The only globals it
// accepts are the ones tensor checkpoints use — collections.OrderedDict,
// torch._utils._rebuild_tensor_v2 / _rebuild_parameter(_with_state),
// torch.<X>Storage, torch.Size and torch dtypes — each with a fixed,
// side-effect-free meaning; any other global (os.system, builtins.eval,
// numpy.*, ...) is refused with an error naming it. Untrusted input: sizes,
// counts, memo indices and nesting are bounded; errors throw sg::Error
// "<name>: <problem>".
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "formats/tensor_source.h"

namespace sg::pickle {

enum class Kind : uint8_t {
  None, Bool, Int, Float, Str, Bytes, List, Tuple, Dict,
  Global,   // an allowed global used as a value (a dtype, a storage class, ...)
  Storage,  // a persistent id ('storage', <X>Storage, key, location, numel)
  Tensor,   // _rebuild_tensor_v2(storage, offset, size, stride, ...)
};

using Id = uint32_t;

struct Node {
  Kind kind = Kind::None;
  bool b = false;
  int64_t i = 0;        // Int; Tensor: storage offset (elements); Storage: numel
  double f = 0;         // Float
  std::string s;        // Str, Bytes; Global: "module.name"; Storage: key
  std::vector<Id> items;                      // List, Tuple
  std::vector<std::pair<Id, Id>> entries;     // Dict (insertion order)
  SrcType dtype = SrcType::F32;               // Storage
  std::string location;                       // Storage ("cpu", "cuda:0")
  Id storage = 0;                             // Tensor
  std::vector<int64_t> shape, stride;         // Tensor
};

struct Limits {
  uint64_t max_nodes = 1u << 22;   // objects created
  uint64_t max_stack = 1u << 22;   // stack entries
  uint64_t max_memo = 1u << 22;    // memo entries
  uint64_t max_marks = 1u << 16;   // nested MARKs
  int max_dims = 16;               // tensor rank
};

class Pickle {
 public:
  std::vector<Node> nodes;
  Id root = 0;
  const Node& at(Id id) const { return nodes[id]; }
  // Dict lookup by string key; nullptr when absent or when `dict` is not a Dict.
  const Node* get(const Node& dict, std::string_view key) const;
};

// Interprets the pickle in data[0, size). `name` stands in for the file in errors.
Pickle unpickle(const uint8_t* data, size_t size, const std::string& name, const Limits& limits = {});

// Whether module.name is one of the accepted globals.
bool is_allowed_global(std::string_view module, std::string_view name);

}  // namespace sg::pickle
