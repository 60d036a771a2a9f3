// libFuzzer target for the checkpoint readers: the PyTorch zip + restricted
// unpickler, safetensors, and the unpickler alone. The first byte picks the
// reader; every tensor an accepted input lists is read in full (bounded), so
// the sanitizers see every offset the readers hand out. Any sg::Error is a
// correct refusal; anything else (crash, sanitizer report, other exception)
// is a bug. Build (needs clang). The CMake option instruments only this file,
// not skingpt_lib, so for coverage-guided fuzzing of the readers compile them
// into the target directly:
//   clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Isrc
//     fuzz/fuzz_checkpoint.cpp src/formats/{pickle,zip,torch_checkpoint,safetensors,tensor_source,mapped_file}.cpp
//     src/core/{quant,dtype}.cpp -o fuzz_checkpoint       (one command)
//   ./fuzz_checkpoint -max_len=4096 fuzz/corpus/checkpoint
// (or: cmake -DCMAKE_CXX_COMPILER=clang++ -DSKINGPT_FUZZ=ON, target fuzz_checkpoint).
// Seeds: byte 0 = reader (0 torch zip, 1 safetensors, 2 pickle), then the file.
#include <cstdint>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "formats/pickle.h"
#include "formats/safetensors.h"
#include "formats/torch_checkpoint.h"

namespace {

volatile float g_sink;

void read_all(const std::vector<sg::SrcTensor>& ts) {
  for (const auto& t : ts) {
    if (!t.problem.empty() || t.numel() > (1 << 22)) continue;
    std::vector<float> v(static_cast<size_t>(t.numel()));
    sg::read_f32(t, 0, t.numel(), v.data());
    for (float x : v) g_sink = x;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const uint8_t mode = data[0] % 3;
  ++data;
  --size;
  try {
    if (mode == 0) {
      auto c = sg::TorchCheckpoint::open_memory(data, size, "fuzz.pth");
      read_all(c->tensors());
      (void)c->value("model/x/0");
    } else if (mode == 1) {
      read_all(sg::read_safetensors_memory(data, size, "fuzz.safetensors").tensors);
    } else {
      sg::pickle::Limits lim;
      lim.max_nodes = 1 << 16;
      lim.max_stack = 1 << 16;
      lim.max_memo = 1 << 16;
      auto p = sg::pickle::unpickle(data, size, "fuzz.pkl", lim);
      (void)p.get(p.at(p.root), "a");
    }
  } catch (const sg::Error&) {
  }
  return 0;
}
