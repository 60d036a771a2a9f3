// libFuzzer target for the GGUF reader (and, for inputs it accepts, the writer).
//
// Every input goes through File::open_memory (no disk access), then every
// getter and every tensor's bytes are exercised. Inputs the reader accepts are
// also written back with Writer (to $FUZZ_GGUF_TMP, default /dev/shm or /tmp)
// and re-read: the copy must hold the same metadata and tensor bytes, or the
// target aborts. Build (needs clang):
//   cmake -S . -B build-fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DSKINGPT_FUZZ=ON
//   cmake --build build-fuzz --target fuzz_gguf
//   build-fuzz/fuzz_gguf fuzz/corpus/gguf
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/gguf.h"

using sg::gguf::File;
using sg::gguf::Value;
using sg::gguf::ValueType;

namespace {

volatile uint64_t g_sink;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_gguf: round-trip invariant violated: %s\n", what);
    std::abort();
  }
}

template <typename F>
void swallow(F&& f) {
  try {
    f();
  } catch (const sg::Error& e) {
    // Every message names the input and is one line.
    check(std::strncmp(e.what(), "fuzz: ", 6) == 0, "error message does not start with the name");
    check(std::strchr(e.what(), '\n') == nullptr, "error message has a newline");
  }
}

void exercise_getters(const File& f) {
  uint64_t acc = 0;
  for (const auto& kv : f.metadata()) {
    const std::string& key = kv.first;  // (clang 14 cannot capture structured bindings)
    check(f.find(key) == &kv.second, "find() does not return the listed value");
    swallow([&] { acc += f.get_uint(key).value_or(0); });
    swallow([&] { acc += static_cast<uint64_t>(f.get_int(key).value_or(0)); });
    swallow([&] { acc += static_cast<uint64_t>(f.get_float(key).value_or(0) != 0); });
    swallow([&] { acc += f.get_bool(key).value_or(false); });
    swallow([&] { acc += f.get_string(key).value_or("").size(); });
    swallow([&] { if (auto* a = f.get_str_array(key)) acc += a->size(); });
    swallow([&] { acc += f.get_float_array(key).value_or(std::vector<double>{}).size(); });
    swallow([&] { acc += f.get_int_array(key).value_or(std::vector<int64_t>{}).size(); });
    swallow([&] { acc += f.require_uint(key); });
    swallow([&] { acc += static_cast<uint64_t>(f.require_int(key)); });
    swallow([&] { acc += static_cast<uint64_t>(f.require_float(key) != 0); });
    swallow([&] { acc += f.require_bool(key); });
    swallow([&] { acc += f.require_string(key).size(); });
    swallow([&] { acc += f.require_str_array(key).size(); });
  }
  swallow([&] { f.require_string("general.architecture"); });
  swallow([&] { f.require_tensor("token_embd.weight"); });
  for (const auto& t : f.tensors()) {
    check(f.find_tensor(t.name) == &t, "find_tensor() does not return the listed tensor");
    check(t.n_elements() > 0, "tensor with no elements");
    check(t.offset % f.alignment() == 0, "unaligned tensor offset");
    const uint8_t* p = f.tensor_data(t);
    // Touch the first, last and every 4096th byte (ASan checks the bounds).
    for (uint64_t i = 0; i < t.nbytes; i += 4096) acc += p[i];
    acc += p[t.nbytes - 1];
  }
  f.touch_all();
  g_sink = acc;
}

bool same_value(const Value& a, const Value& b) {
  if (a.type != b.type) return false;
  if (a.type == ValueType::ARRAY && a.elem_type != b.elem_type) return false;
  auto same_double = [](double x, double y) { return x == y || (std::isnan(x) && std::isnan(y)); };
  if (auto* x = std::get_if<double>(&a.v)) return same_double(*x, std::get<double>(b.v));
  if (auto* x = std::get_if<std::vector<double>>(&a.v)) {
    const auto& y = std::get<std::vector<double>>(b.v);
    if (x->size() != y.size()) return false;
    for (size_t i = 0; i < x->size(); ++i)
      if (!same_double((*x)[i], y[i])) return false;
    return true;
  }
  return a.v == b.v;
}

std::string tmp_path() {
  const char* dir = std::getenv("FUZZ_GGUF_TMP");
  std::string d = dir ? dir : (access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
  return d + "/fuzz_gguf." + std::to_string(getpid()) + ".gguf";
}

void round_trip(const File& f) {
  static const std::string path = tmp_path();
  {
    sg::gguf::Writer w(path, f.alignment());
    for (const auto& [k, v] : f.metadata()) w.set(k, v);
    for (const auto& t : f.tensors()) w.add_tensor(t.name, t.type, t.dims);
    w.begin();
    for (const auto& t : f.tensors()) w.write_tensor_data(f.tensor_data(t), t.nbytes);
    w.finish();
  }
  auto g = File::open(path);
  check(g->alignment() == f.alignment(), "alignment changed");
  check(g->metadata().size() == f.metadata().size(), "metadata count changed");
  for (size_t i = 0; i < f.metadata().size(); ++i) {
    check(g->metadata()[i].first == f.metadata()[i].first, "metadata key changed");
    check(same_value(g->metadata()[i].second, f.metadata()[i].second), "metadata value changed");
  }
  check(g->tensors().size() == f.tensors().size(), "tensor count changed");
  for (size_t i = 0; i < f.tensors().size(); ++i) {
    const auto& a = f.tensors()[i];
    const auto& b = g->tensors()[i];
    check(a.name == b.name && a.type == b.type && a.dims == b.dims && a.nbytes == b.nbytes, "tensor info changed");
    check(std::memcmp(f.tensor_data(a), g->tensor_data(b), a.nbytes) == 0, "tensor bytes changed");
  }
  unlink(path.c_str());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::unique_ptr<File> f;
  swallow([&] { f = File::open_memory(data, size, "fuzz"); });
  if (!f) return 0;
  exercise_getters(*f);
  // The writer keeps tensor data streaming; cap the copy to keep runs fast.
  uint64_t total = 0;
  for (const auto& t : f->tensors()) total += t.nbytes;
  if (total <= (1u << 20)) round_trip(*f);
  return 0;
}
