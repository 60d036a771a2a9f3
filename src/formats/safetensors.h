// safetensors files (huggingface/safetensors): u64 little-endian header length
// N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]},
// "__metadata__": {...}}, then the tensor bytes (offsets relative to the end of
// the header). Mapped zero-copy; every offset, size and dtype is checked.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/mapped_file.h"
#include "formats/tensor_source.h"

namespace sg {

struct SafetensorsFile {
  static constexpr uint64_t kMaxHeader = 100ull << 20;  // the reference implementation's limit
  std::vector<SrcTensor> tensors;                       // in header order
  std::map<std::string, std::string> metadata;          // __metadata__ (string values)
};

SafetensorsFile read_safetensors(const std::string& path);
// Over caller-owned bytes (fuzzing, tests); `file` may be null.
SafetensorsFile read_safetensors_memory(const uint8_t* data, uint64_t size, const std::string& name,
                                        std::shared_ptr<const MappedFile> file = nullptr);

// A sharded checkpoint: the index JSON's "weight_map" {tensor: shard file}.
// Shards (safetensors or PyTorch .bin) are opened from the index's folder; each
// tensor is taken from the shard the index names. Shard names must be plain
// file names (no '/').
TensorSet open_sharded(const std::string& index_path);

}  // namespace sg
