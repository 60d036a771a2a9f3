// EVA ViT → ln_vision → Q-Former → projection against every intermediate of
// the reference (real SkinGPT-4 code, fp32), and the fp16-weights variant.
#include <gtest/gtest.h>

#include <map>

#include "core/error.h"
#include "core/threads.h"
#include "model/vision.h"
#include "vision_fixtures.h"

namespace sg {
namespace {

using test::read_f32;
using test::ref_dir;

TEST(VisionReference, EveryIntermediateMatchesF32) {
  test::TempDir dir;
  const std::string path = (dir / "vision.gguf").string();
  test::write_ref_vision(path, DType::F32);
  auto m = VisionModel::load(path);
  const auto image = read_f32(ref_dir() / "tensors/image.bin");
  for (int threads : {1, 2}) {
    ThreadPool pool(threads);
    std::map<std::string, std::vector<float>> got;
    const auto out = m->encode(image.data(), pool, [&](const std::string& n, const float* d, size_t k) {
      got[n].assign(d, d + k);
    });
    const char* names[] = {"vit.patch_embed", "vit.embed_with_cls_pos", "vit.blocks.0.attn_out",
                           "vit.blocks.0.mlp_out", "vit.blocks.0.out", "vit.blocks.1.attn_out",
                           "vit.blocks.1.mlp_out", "vit.blocks.1.out", "vit_out", "ln_vision_out",
                           "qformer.embeddings_out", "qformer.layer.0.self_attn_out",
                           "qformer.layer.0.cross_attn_out", "qformer.layer.0.ffn_query_out",
                           "qformer.layer.0.out", "qformer.layer.1.self_attn_out",
                           "qformer.layer.1.ffn_query_out", "qformer.layer.1.out", "qformer_out",
                           "llama_proj_out"};
    for (const char* n : names) {
      ASSERT_TRUE(got.count(n)) << n;
      EXPECT_LE(test::max_abs_diff(got[n], read_f32(ref_dir() / "tensors" / (std::string(n) + ".bin"))), 1e-4)
          << n << " threads " << threads;
    }
    EXPECT_FALSE(got.count("qformer.layer.1.cross_attn_out")) << "layer 1 has no cross-attention";
    EXPECT_EQ(out, got["llama_proj_out"]);
  }
}

TEST(VisionReference, Fp16WeightsMatchReferenceFp16Variant) {
  test::TempDir dir;
  const std::string path = (dir / "vision_f16.gguf").string();
  test::write_ref_vision(path, DType::F16, /*fp16_biases=*/true);
  auto m = VisionModel::load(path);
  const auto image = read_f32(ref_dir() / "tensors/image.bin");
  ThreadPool pool(2);
  std::map<std::string, std::vector<float>> got;
  m->encode(image.data(), pool, [&](const std::string& n, const float* d, size_t k) { got[n].assign(d, d + k); });
  for (const char* n : {"vit_out", "ln_vision_out", "qformer_out", "llama_proj_out"})
    EXPECT_LE(test::max_abs_diff(got[n], read_f32(ref_dir() / "tensors" / ("fp16w." + std::string(n) + ".bin"))), 1e-4)
        << n;
}

// Faster weight types keep the image embeddings near F32's. Bounds are
// relative RMS error of llama_proj_out; measured values are printed.
TEST(VisionQuantized, EmbeddingsStayNearF32) {
  test::TempDir dir;
  const auto image = read_f32(ref_dir() / "tensors/image.bin");
  ThreadPool pool(2);
  auto run = [&](DType t) {
    const std::string path = (dir / (std::string(traits(t).name) + ".gguf")).string();
    test::write_ref_vision(path, t);
    return VisionModel::load(path)->encode(image.data(), pool);
  };
  const auto ref = run(DType::F32);
  for (auto [t, bound] : {std::pair{DType::F16, 1e-3}, {DType::BF16, 1e-2}, {DType::Q8_0, 2e-2}}) {
    const auto got = run(t);
    double ss = 0, rs = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
      ss += (got[i] - ref[i]) * double(got[i] - ref[i]);
      rs += ref[i] * double(ref[i]);
    }
    const double rel = std::sqrt(ss / rs);
    std::printf("  vision %-5s relative RMS error of image embeddings vs f32: %.5f (bound %.3f)\n",
                std::string(traits(t).name).c_str(), rel, bound);
    EXPECT_LT(rel, bound) << traits(t).name;
    EXPECT_GT(rel, 0.0) << traits(t).name;
  }
}

TEST(VisionFile, SourceNamesCoverEveryTensor) {
  for (const auto& t : vision_tensor_specs(test::ref_vision_config(), DType::F32))
    EXPECT_TRUE(std::filesystem::exists(ref_dir() / "params" / (vision_source_name(t.name) + ".bin"))) << t.name;
  EXPECT_EQ(vision_source_name("qf.blk.10.cross_norm.weight"),
            "Qformer.bert.encoder.layer.10.crossattention.output.LayerNorm.weight");
  EXPECT_EQ(vision_source_name("v.blk.38.attn_qkv.weight"), "visual_encoder.blocks.38.attn.qkv.weight");
  EXPECT_THROW(vision_source_name("v.blk.0.nonsense"), Error);
}

TEST(VisionFile, RealSizeNamesFitGgufLimit) {
  VisionConfig real;  // ViT-g/14 + Q-Former defaults
  for (const auto& t : vision_tensor_specs(real, DType::F16)) EXPECT_LT(t.name.size(), 64u) << t.name;
}

TEST(VisionFile, WrongArchitectureIsRefused) {
  test::TempDir dir;
  const std::string path = (dir / "x.gguf").string();
  {
    gguf::Writer w(path);
    w.set("general.architecture", gguf::Value::str("llama"));
    w.begin();
    w.finish();
  }
  try {
    VisionModel::load(path);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("skingpt_vision"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace sg
