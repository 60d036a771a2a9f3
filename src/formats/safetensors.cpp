#include "formats/safetensors.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"

namespace sg {

namespace {

bool parse_dtype(const std::string& s, SrcType* t) {
  static const std::pair<const char*, SrcType> kTypes[] = {
      {"F32", SrcType::F32}, {"F16", SrcType::F16}, {"BF16", SrcType::BF16}, {"F64", SrcType::F64},
      {"I64", SrcType::I64}, {"I32", SrcType::I32}, {"I16", SrcType::I16},   {"I8", SrcType::I8},
      {"U8", SrcType::U8},   {"BOOL", SrcType::Bool},
  };
  for (const auto& [n, v] : kTypes)
    if (s == n) {
      *t = v;
      return true;
    }
  return false;
}

}  // namespace

SafetensorsFile read_safetensors_memory(const uint8_t* data, uint64_t size, const std::string& name,
                                        std::shared_ptr<const MappedFile> file) {
  auto fail = [&](const std::string& what) -> void { throw Error(name + ": " + what); };
  if (size < 8) fail("not a safetensors file (" + std::to_string(size) + " bytes, too short)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(data[i]) << (8 * i);
  if (n > SafetensorsFile::kMaxHeader) fail("safetensors header length " + std::to_string(n) + " is implausible (not a safetensors file?)");
  if (n > size - 8) fail("safetensors header (" + std::to_string(n) + " bytes) extends past the end of the file (truncated?)");
  if (n < 2 || data[8] != '{') fail("not a safetensors file (the header is not a JSON object)");
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(data + 8, data + 8 + n);
  } catch (const nlohmann::json::exception& e) {
    fail(std::string("safetensors header is not valid JSON: ") + e.what());
  }
  if (!h.is_object()) fail("safetensors header is not a JSON object");
  const uint8_t* base = data + 8 + n;
  const uint64_t data_size = size - 8 - n;
  SafetensorsFile out;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // (begin, end) to check overlaps
  std::vector<std::string> range_names;
  for (auto it = h.begin(); it != h.end(); ++it) {
    const std::string& key = it.key();
    const nlohmann::json& v = it.value();
    if (key == "__metadata__") {
      if (!v.is_object()) fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m)
        if (m.value().is_string()) out.metadata[m.key()] = m.value().get<std::string>();
      continue;
    }
    const std::string what = "tensor '" + key + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      fail(what + " lacks dtype, shape or data_offsets");
    const auto& dt = v["dtype"];
    const auto& shape = v["shape"];
    const auto& offs = v["data_offsets"];
    if (!dt.is_string() || !shape.is_array() || !offs.is_array() || offs.size() != 2 ||
        !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      fail(what + " has a malformed dtype, shape or data_offsets");
    if (shape.size() > 16) fail(what + " has more than 16 dimensions");
    SrcTensor t;
    t.name = key;
    t.file = file;
    t.origin = name;
    const std::string dts = dt.get<std::string>();
    const bool known = parse_dtype(dts, &t.type);
    uint64_t numel = 1;
    bool overflow = false;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) fail(what + " has a negative or non-integer dimension");
      const uint64_t x = d.get<uint64_t>();
      if (x > static_cast<uint64_t>(INT64_MAX)) fail(what + " has an implausible dimension");
      if (x != 0 && numel > static_cast<uint64_t>(INT64_MAX) / x) overflow = true;
      numel *= x;
      t.shape.push_back(static_cast<int64_t>(x));
    }
    const uint64_t b = offs[0].get<uint64_t>(), e = offs[1].get<uint64_t>();
    if (b > e || e > data_size)
      fail(what + " has data_offsets [" + std::to_string(b) + ", " + std::to_string(e) + "] outside the " +
           std::to_string(data_size) + " data bytes (truncated?)");
    if (!known) {
      t.problem = "has dtype " + dts + ", which is not supported (F32, F16, BF16, F64 and integer types are)";
    } else {
      const uint64_t esz = src_type_size(t.type);
      if (overflow || numel > UINT64_MAX / esz || numel * esz != e - b)
        fail(what + " of shape " + t.shape_str() + " " + dts + " needs " +
             (overflow ? std::string("too many") : std::to_string(numel * esz)) + " bytes but its data_offsets span " +
             std::to_string(e - b));
      t.data = base + b;
      t.nbytes = e - b;
    }
    ranges.emplace_back(b, e);
    range_names.push_back(key);
    out.tensors.push_back(std::move(t));
  }
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
  for (size_t i = 1; i < order.size(); ++i)
    if (ranges[order[i]].first < ranges[order[i - 1]].second)
      fail("tensors '" + range_names[order[i - 1]] + "' and '" + range_names[order[i]] + "' overlap");
  return out;
}

SafetensorsFile read_safetensors(const std::string& path) {
  auto f = MappedFile::open(path);
  return read_safetensors_memory(f->data(), f->size(), path, f);
}

TensorSet open_sharded(const std::string& index_path) {
  namespace fs = std::filesystem;
  std::ifstream in(index_path, std::ios::binary);
  if (!in) throw Error(index_path + ": cannot open");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  if (text.size() > (64u << 20)) throw Error(index_path + ": index file is implausibly large");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(index_path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw Error(index_path + ": no \"weight_map\" object (not a sharded checkpoint index)");
  std::map<std::string, std::vector<std::string>> by_shard;  // shard file → tensor names
  for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) {
    if (!it.value().is_string()) throw Error(index_path + ": weight_map entry '" + it.key() + "' is not a file name");
    const std::string shard = it.value().get<std::string>();
    if (shard.empty() || shard.find('/') != std::string::npos || shard == "." || shard == "..")
      throw Error(index_path + ": weight_map names '" + shard + "', which is not a plain file name in the index's folder");
    by_shard[shard].push_back(it.key());
  }
  if (by_shard.empty()) throw Error(index_path + ": weight_map is empty");
  const fs::path dir = fs::path(index_path).parent_path();
  TensorSet set;
  set.description = index_path + " (" + std::to_string(by_shard.size()) + " shards)";
  for (const auto& [shard, names] : by_shard) {
    const std::string sp = (dir / shard).string();
    if (!fs::exists(sp)) throw Error(index_path + ": shard " + shard + " is missing");
    TensorSet one = open_tensor_file(sp, true);
    for (const auto& n : names) {
      const SrcTensor* t = one.find(n);
      if (!t) throw Error(sp + ": has no tensor '" + n + "', which " + index_path + " says it holds");
      set.add(*t);
    }
  }
  return set;
}

}  // namespace sg
