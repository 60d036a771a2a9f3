// Byte-level builders for checkpoint tests: zip archives (stored members,
// optionally with ZIP64 records), pickle opcodes, torch.save-style state
// dicts and safetensors files — so hostile and edge-case inputs can be crafted
// without Python.
#pragma once
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "formats/zip.h"

namespace sg::test {

inline void put_le(std::string& s, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) s += static_cast<char>((v >> (8 * i)) & 0xFF);
}

inline void write_file(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

struct ZipBuilder {
  struct Member {
    std::string name, data;
    uint16_t method = 0;
  };
  std::vector<Member> members;
  bool zip64 = false;  // write every size/offset through ZIP64 extra fields and records

  ZipBuilder& add(std::string name, std::string data, uint16_t method = 0) {
    members.push_back({std::move(name), std::move(data), method});
    return *this;
  }

  std::string build() const {
    std::string out, cd;
    const uint32_t sat = 0xFFFFFFFFu;
    for (const auto& m : members) {
      const uint64_t off = out.size();
      const uint32_t crc = crc32(reinterpret_cast<const uint8_t*>(m.data.data()), m.data.size());
      std::string lextra;
      if (zip64) {
        put_le(lextra, 1, 2);
        put_le(lextra, 16, 2);
        put_le(lextra, m.data.size(), 8);
        put_le(lextra, m.data.size(), 8);
      }
      put_le(out, 0x04034b50, 4);
      put_le(out, zip64 ? 45 : 20, 2);
      put_le(out, 0, 2);
      put_le(out, m.method, 2);
      put_le(out, 0, 4);  // time, date
      put_le(out, crc, 4);
      put_le(out, zip64 ? sat : m.data.size(), 4);
      put_le(out, zip64 ? sat : m.data.size(), 4);
      put_le(out, m.name.size(), 2);
      put_le(out, lextra.size(), 2);
      out += m.name + lextra + m.data;

      std::string cextra;
      if (zip64) {
        put_le(cextra, 1, 2);
        put_le(cextra, 24, 2);
        put_le(cextra, m.data.size(), 8);
        put_le(cextra, m.data.size(), 8);
        put_le(cextra, off, 8);
      }
      put_le(cd, 0x02014b50, 4);
      put_le(cd, zip64 ? 45 : 20, 2);
      put_le(cd, zip64 ? 45 : 20, 2);
      put_le(cd, 0, 2);
      put_le(cd, m.method, 2);
      put_le(cd, 0, 4);
      put_le(cd, crc, 4);
      put_le(cd, zip64 ? sat : m.data.size(), 4);
      put_le(cd, zip64 ? sat : m.data.size(), 4);
      put_le(cd, m.name.size(), 2);
      put_le(cd, cextra.size(), 2);
      put_le(cd, 0, 2);  // comment
      put_le(cd, 0, 2);  // disk
      put_le(cd, 0, 2);  // internal attributes
      put_le(cd, 0, 4);  // external attributes
      put_le(cd, zip64 ? sat : off, 4);
      cd += m.name + cextra;
    }
    const uint64_t cd_off = out.size();
    out += cd;
    if (zip64) {
      const uint64_t rec = out.size();
      put_le(out, 0x06064b50, 4);
      put_le(out, 44, 8);
      put_le(out, 45, 2);
      put_le(out, 45, 2);
      put_le(out, 0, 4);
      put_le(out, 0, 4);
      put_le(out, members.size(), 8);
      put_le(out, members.size(), 8);
      put_le(out, cd.size(), 8);
      put_le(out, cd_off, 8);
      put_le(out, 0x07064b50, 4);
      put_le(out, 0, 4);
      put_le(out, rec, 8);
      put_le(out, 1, 4);
    }
    put_le(out, 0x06054b50, 4);
    put_le(out, 0, 2);
    put_le(out, 0, 2);
    put_le(out, zip64 ? 0xFFFF : members.size(), 2);
    put_le(out, zip64 ? 0xFFFF : members.size(), 2);
    put_le(out, zip64 ? sat : cd.size(), 4);
    put_le(out, zip64 ? sat : cd_off, 4);
    put_le(out, 0, 2);
    return out;
  }
};

// --- pickle opcodes (protocol 2 unless noted)
namespace pk {
inline std::string proto(int v) { return std::string("\x80", 1) + static_cast<char>(v); }
inline std::string str(const std::string& s) {
  std::string o = "X";
  put_le(o, s.size(), 4);
  return o + s;
}
inline std::string global(const std::string& module, const std::string& name) { return "c" + module + "\n" + name + "\n"; }
inline std::string integer(int64_t v) {
  std::string o;
  if (v >= 0 && v < 256) {
    o = "K";
    put_le(o, static_cast<uint64_t>(v), 1);
  } else if (v >= 0 && v < 65536) {
    o = "M";
    put_le(o, static_cast<uint64_t>(v), 2);
  } else {
    o = std::string("\x8a\x08", 2);
    put_le(o, static_cast<uint64_t>(v), 8);
  }
  return o;
}
inline std::string tuple(const std::vector<int64_t>& v) {
  std::string o = "(";
  for (int64_t x : v) o += integer(x);
  return o + "t";
}
inline const std::string kMark = "(", kStop = ".", kEmptyDict = "}", kEmptyTuple = ")", kReduce = "R",
                         kSetItems = "u", kSetItem = "s", kTuple = "t", kFalse = "\x89";
// _rebuild_tensor_v2(('storage', torch.<storage>, key, 'cpu', numel), offset, shape, stride, False, OrderedDict())
inline std::string tensor(const std::string& storage_type, const std::string& key, int64_t numel, int64_t offset,
                          const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  return global("torch._utils", "_rebuild_tensor_v2") + "(" + "(" + str("storage") + global("torch", storage_type) +
         str(key) + str("cpu") + integer(numel) + "t" + "Q" + integer(offset) + tuple(shape) + tuple(stride) + kFalse +
         global("collections", "OrderedDict") + kEmptyTuple + kReduce + "t" + kReduce;
}
}  // namespace pk

// A torch.save-like zip: archive/data.pkl + archive/data/<key> + archive/version.
inline std::string torch_zip(const std::string& pickle, const std::vector<std::pair<std::string, std::string>>& storages,
                             bool zip64 = false) {
  ZipBuilder z;
  z.zip64 = zip64;
  z.add("archive/data.pkl", pickle);
  for (const auto& [k, v] : storages) z.add("archive/data/" + k, v);
  z.add("archive/version", "3\n");
  return z.build();
}

inline std::string f32_bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

// A safetensors file from (name, dtype, shape, bytes), in the given order.
using StEntry = std::tuple<std::string, std::string, std::vector<int64_t>, std::string>;
inline std::string safetensors_bytes(const std::vector<StEntry>& entries) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  h["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& [name, dtype, shape, bytes] : entries) {
    h[name] = {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  std::string js = h.dump();
  while ((js.size() + 8) % 8) js += ' ';
  std::string out;
  put_le(out, js.size(), 8);
  return out + js + data;
}

}  // namespace sg::test
