#include "formats/tensor_source.h"

#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/quant.h"
#include "formats/safetensors.h"
#include "formats/torch_checkpoint.h"

namespace sg {

std::string_view src_type_name(SrcType t) {
  switch (t) {
    case SrcType::F32: return "float32";
    case SrcType::F16: return "float16";
    case SrcType::BF16: return "bfloat16";
    case SrcType::F64: return "float64";
    case SrcType::I64: return "int64";
    case SrcType::I32: return "int32";
    case SrcType::I16: return "int16";
    case SrcType::I8: return "int8";
    case SrcType::U8: return "uint8";
    case SrcType::Bool: return "bool";
  }
  return "?";
}

size_t src_type_size(SrcType t) {
  switch (t) {
    case SrcType::F64: case SrcType::I64: return 8;
    case SrcType::F32: case SrcType::I32: return 4;
    case SrcType::F16: case SrcType::BF16: case SrcType::I16: return 2;
    default: return 1;
  }
}

bool src_type_is_float(SrcType t) {
  return t == SrcType::F32 || t == SrcType::F16 || t == SrcType::BF16 || t == SrcType::F64;
}

int64_t SrcTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  for (int64_t d : shape) {
    if (n > INT64_MAX / d) return INT64_MAX;  // only possible for tensors flagged with a problem
    n *= d;
  }
  return n;
}

std::string SrcTensor::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

namespace {

template <typename T>
void convert(const uint8_t* p, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    T v;
    std::memcpy(&v, p + i * sizeof(T), sizeof(T));
    out[i] = static_cast<float>(v);
  }
}

void check_range(const SrcTensor& t, int64_t first, int64_t n) {
  if (!t.problem.empty()) throw Error(t.origin + ": tensor '" + t.name + "' " + t.problem);
  const int64_t numel = t.numel();
  if (first < 0 || n < 0 || first > numel || n > numel - first)
    throw Error(t.origin + ": tensor '" + t.name + "': elements [" + std::to_string(first) + ", " +
                std::to_string(first + n) + ") are outside its " + std::to_string(numel));
  if (static_cast<uint64_t>(numel) * src_type_size(t.type) != t.nbytes || (!t.data && numel > 0))
    throw Error(t.origin + ": tensor '" + t.name + "' has inconsistent size");
}

}  // namespace

void read_f32(const SrcTensor& t, int64_t first, int64_t n, float* out) {
  check_range(t, first, n);
  const uint8_t* p = t.data + static_cast<uint64_t>(first) * src_type_size(t.type);
  switch (t.type) {
    case SrcType::F32: std::memcpy(out, p, static_cast<size_t>(n) * 4); break;
    case SrcType::F16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = f16_to_f32(h);
      }
      break;
    case SrcType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      break;
    case SrcType::F64: convert<double>(p, n, out); break;
    case SrcType::I64: convert<int64_t>(p, n, out); break;
    case SrcType::I32: convert<int32_t>(p, n, out); break;
    case SrcType::I16: convert<int16_t>(p, n, out); break;
    case SrcType::I8: convert<int8_t>(p, n, out); break;
    case SrcType::U8: convert<uint8_t>(p, n, out); break;
    case SrcType::Bool: convert<uint8_t>(p, n, out); break;
  }
}

void release(const SrcTensor& t, int64_t first, int64_t n) {
  if (!t.file || !t.data || n <= 0) return;
  const uint64_t esz = src_type_size(t.type);
  t.file->release(t.data + static_cast<uint64_t>(first) * esz, static_cast<uint64_t>(n) * esz);
}

void TensorSet::add(SrcTensor t) {
  if (by_name_.count(t.name))
    throw Error((t.origin.empty() ? description : t.origin) + ": tensor '" + t.name + "' appears twice");
  std::string name = t.name;
  by_name_.emplace(std::move(name), std::move(t));
}

const SrcTensor* TensorSet::find(std::string_view name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &it->second;
}

TensorSet open_tensor_file(const std::string& path, bool state_dict_only) {
  char magic[2] = {0, 0};
  {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error(path + ": cannot open");
    in.read(magic, 2);
  }
  TensorSet set;
  set.description = path;
  if (std::memcmp(magic, "PK", 2) == 0 || (static_cast<uint8_t>(magic[0]) == 0x80 && magic[1] <= 5)) {
    auto ck = TorchCheckpoint::open(path);
    const auto& all = ck->tensors();
    if (!state_dict_only) {
      for (const auto& t : all) set.add(t);
      return set;
    }
    // The state dict: top-level tensors, else those under 'model', 'state_dict' or 'module'.
    auto take = [&](const std::string& prefix) {
      for (const auto& t : all) {
        if (t.name.compare(0, prefix.size(), prefix) != 0) continue;
        const std::string rest = t.name.substr(prefix.size());
        if (rest.find('/') != std::string::npos) continue;
        SrcTensor c = t;
        c.name = rest;
        set.add(std::move(c));
      }
      return set.size() > 0;
    };
    if (take("") || take("model/") || take("state_dict/") || take("module/")) return set;
    std::string keys;
    if (const auto& root = ck->pickle().at(ck->pickle().root); root.kind == pickle::Kind::Dict) {
      for (const auto& [k, v] : root.entries) {
        const auto& kn = ck->pickle().at(k);
        if (kn.kind == pickle::Kind::Str && keys.size() < 200) keys += (keys.empty() ? "" : ", ") + kn.s;
      }
    }
    throw Error(path + ": no state dict found (no tensors at the top level or under 'model', 'state_dict' "
                "or 'module'; top-level keys: " + (keys.empty() ? "none" : keys) + ")");
  }
  for (auto& t : read_safetensors(path).tensors) set.add(std::move(t));
  return set;
}

}  // namespace sg
