// Builds vision GGUF files for tests from the reference's raw parameters.
#pragma once
#include <string>
#include <vector>

#include "core/quant.h"
#include "formats/gguf.h"
#include "model/vision_file.h"
#include "test_util.h"

namespace sg::test {

// The tiny vision side of ../shared/reference/minigpt4-tiny (manifest.json).
inline VisionConfig ref_vision_config() {
  VisionConfig c;
  c.image_size = 32; c.patch_size = 8;
  c.vit_width = 64; c.vit_depth = 2; c.vit_heads = 4; c.vit_ffn = 279; c.vit_eps = 1e-6f; c.ln_vision_eps = 1e-5f;
  c.qf_width = 32; c.qf_depth = 2; c.qf_heads = 2; c.qf_ffn = 128; c.qf_cross_freq = 2; c.n_query = 4;
  c.qf_eps = 1e-12f; c.llm_dim = 64;
  return c;
}

// Writes the reference's vision weights. With `fp16_weights`, matrices are
// stored as F16 and Linear/Conv biases are rounded through fp16, which is
// what SkinGPT-4's convert_weights_to_fp16 does (the reference's fp16w.*).
inline void write_ref_vision(const std::string& path, DType matrix_type, bool fp16_biases = false) {
  const VisionConfig c = ref_vision_config();
  gguf::Writer w(path);
  write_vision_metadata(w, c, "reference tiny");
  const auto specs = vision_tensor_specs(c, matrix_type);
  for (const auto& t : specs) w.add_tensor(t.name, t.type, t.dims);
  w.begin();
  for (const auto& t : specs) {
    std::vector<float> f = read_f32(ref_dir() / "params" / (vision_source_name(t.name) + ".bin"));
    const bool linear_bias = t.name.size() > 5 && t.name.substr(t.name.size() - 5) == ".bias" &&
                             t.name.find("norm") == std::string::npos;
    if (fp16_biases && linear_bias)
      for (auto& x : f) x = f16_to_f32(f32_to_f16(x));
    const int64_t row = t.dims[0], rows = static_cast<int64_t>(f.size()) / row;
    std::vector<uint8_t> q(row_bytes(t.type, row) * rows);
    for (int64_t r = 0; r < rows; ++r)
      quantize_row(t.type, f.data() + r * row, q.data() + r * row_bytes(t.type, row), row);
    w.write_tensor_data(q.data(), q.size());
  }
  w.finish();
}

}  // namespace sg::test
