#include <cstdio>

#include "app/args.h"
#include "app/commands.h"
#include "app/progress.h"
#include "core/error.h"
#include "model/synth.h"
#include "model/vision.h"
#include "text/vocab.h"

namespace sg::app {

int cmd_synth(int argc, char** argv) {
  std::string out, arch = "llama", type, tokenizer;
  int64_t dim = 4096, layers = 32, heads = 32, kv_heads = 0, ffn = 11008, vocab = 32000, ctx = 4096;
  int64_t seed = 1;
  double eps = 1e-5, theta = 10000;
  Args a("synth",
         "Write a model file with random weights of any shape, to measure speed and memory at real\n"
         "sizes without real weights. Defaults are Llama-2-7B's shape; 13B is\n"
         "--dim 5120 --layers 40 --heads 40 --ffn 13824.\n"
         "With --arch vision: the vision file (docs/vision-gguf.md) with the real EVA ViT-g/14 +\n"
         "Q-Former shapes and a 768→5120 projection (--dim sets the projection width).");
  a.option("-o,--output", &out, "output GGUF path");
  a.option("--arch", &arch, "architecture: llama or vision");
  a.option("--type", &type, "weight type: f32 f16 bf16 q8_0 q4_0 q4_k q6_k q4_k_m (default q4_k_m; vision f16)");
  a.option("--dim", &dim, "embedding width");
  a.option("--layers", &layers, "number of blocks");
  a.option("--heads", &heads, "attention heads");
  a.option("--kv-heads", &kv_heads, "key/value heads (0 = same as --heads)");
  a.option("--ffn", &ffn, "feed-forward width");
  a.option("--vocab", &vocab, "vocabulary size");
  a.option("--ctx", &ctx, "training context length written to the metadata");
  a.option("--rms-eps", &eps, "RMSNorm epsilon");
  a.option("--rope-theta", &theta, "RoPE base");
  a.option("--tokenizer", &tokenizer, "embed this tokenizer (tokenizer.model or GGUF); its size must equal --vocab");
  a.option("--seed", &seed, "random seed");
  VisionConfig vc;  // defaults: ViT-g/14 (39 blocks used) + BLIP-2 Q-Former
  a.option("--image-size", &vc.image_size, "vision: input size");
  a.option("--patch", &vc.patch_size, "vision: patch size");
  a.option("--vit-width", &vc.vit_width, "vision: ViT width");
  a.option("--vit-depth", &vc.vit_depth, "vision: ViT blocks used");
  a.option("--vit-heads", &vc.vit_heads, "vision: ViT heads");
  a.option("--vit-ffn", &vc.vit_ffn, "vision: ViT MLP width");
  a.option("--qf-width", &vc.qf_width, "vision: Q-Former width");
  a.option("--qf-depth", &vc.qf_depth, "vision: Q-Former layers");
  a.option("--qf-heads", &vc.qf_heads, "vision: Q-Former heads");
  a.option("--qf-ffn", &vc.qf_ffn, "vision: Q-Former FFN width");
  a.option("--queries", &vc.n_query, "vision: number of query tokens");
  if (!a.parse(argc, argv)) return 0;
  if (out.empty()) throw Error("synth: -o FILE is required");
  if (arch == "vision") {
    const auto t = dtype_from_name(type.empty() ? "f16" : type);
    if (!t || (*t != DType::F32 && *t != DType::F16 && *t != DType::BF16 && *t != DType::Q8_0))
      throw Error("synth: vision weights must be f32, f16, bf16 or q8_0");
    auto in = [](const char* what, int64_t v, int64_t hi) {
      if (v < 1 || v > hi) throw Error(std::string("synth: ") + what + " must be in 1.." + std::to_string(hi));
    };
    in("--image-size", vc.image_size, 4096);
    in("--patch", vc.patch_size, vc.image_size);
    in("--vit-width", vc.vit_width, 16384);
    in("--vit-depth", vc.vit_depth, 256);
    in("--vit-heads", vc.vit_heads, vc.vit_width);
    in("--vit-ffn", vc.vit_ffn, 1 << 17);
    in("--qf-width", vc.qf_width, 16384);
    in("--qf-depth", vc.qf_depth, 256);
    in("--qf-heads", vc.qf_heads, vc.qf_width);
    in("--qf-ffn", vc.qf_ffn, 1 << 17);
    in("--queries", vc.n_query, 4096);
    if (vc.image_size % vc.patch_size || vc.vit_width % vc.vit_heads || vc.qf_width % vc.qf_heads)
      throw Error("synth: image size must be a multiple of the patch, widths multiples of the head counts");
    vc.llm_dim = a.was_set("--dim") ? dim : 5120;
    Progress bar("synth " + out, 0, "B");
    synth_vision(out, vc, *t, static_cast<uint64_t>(seed), [&](uint64_t done, uint64_t total) {
      bar.set_total(total);
      bar.update(done);
    });
    return 0;
  }
  if (arch != "llama") throw Error("synth: unknown --arch '" + arch + "' (llama or vision)");
  if (type.empty()) type = "q4_k_m";
  const auto scheme = parse_quant_scheme(type);
  if (!scheme) throw Error("synth: unknown --type '" + type + "'");
  if (kv_heads == 0) kv_heads = heads;
  auto check = [](const char* what, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
      throw Error(std::string("synth: ") + what + " must be in " + std::to_string(lo) + ".." + std::to_string(hi));
  };
  check("--dim", dim, 8, 65536);
  check("--layers", layers, 1, 512);
  check("--heads", heads, 1, 1024);
  check("--kv-heads", kv_heads, 1, heads);
  check("--ffn", ffn, 1, 1 << 20);
  check("--vocab", vocab, 1, 1 << 22);
  if (dim % heads || heads % kv_heads || (dim / heads) % 2)
    throw Error("synth: --dim must be a multiple of --heads with an even head size, and --heads of --kv-heads");
  LlamaConfig c;
  c.n_vocab = vocab; c.dim = dim; c.n_layers = layers; c.n_heads = heads; c.n_kv_heads = kv_heads;
  c.ffn = ffn; c.n_ctx_train = ctx; c.rope_dim = dim / heads;
  c.rms_eps = static_cast<float>(eps); c.rope_theta = static_cast<float>(theta);
  Vocab v;
  if (!tokenizer.empty()) v = load_vocab(tokenizer);
  Progress bar("synth " + out, 0, "B");
  synth_llama(out, c, *scheme, tokenizer.empty() ? nullptr : &v, static_cast<uint64_t>(seed),
              [&](uint64_t done, uint64_t total) {
                bar.set_total(total);
                bar.update(done);
              });
  bar.finish();
  return 0;
}

}  // namespace sg::app
