// `skingpt convert`: the checkpoints users have → MODEL_DIR/vision.gguf + llm.gguf.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <thread>

#include "app/args.h"
#include "app/commands.h"
#include "app/progress.h"
#include "core/error.h"
#include "core/threads.h"
#include "formats/gguf.h"
#include "model/convert.h"
#include "model/llama.h"
#include "model/vision_file.h"
#include "text/vocab.h"

namespace sg::app {

namespace fs = std::filesystem;

namespace {

std::string human_bytes(uint64_t b) {
  char s[32];
  if (b >= 1000000000ull) std::snprintf(s, sizeof s, "%.2f GB", b / 1e9);
  else if (b >= 1000000ull) std::snprintf(s, sizeof s, "%.1f MB", b / 1e6);
  else std::snprintf(s, sizeof s, "%.1f KB", b / 1e3);
  return s;
}

bool is_gguf(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char m[4] = {};
  in.read(m, 4);
  return in.gcount() == 4 && std::string(m, 4) == "GGUF";
}

ByteProgress bar_callback(Progress& bar) {
  return [&bar](uint64_t done, uint64_t total) {
    bar.set_total(total);
    bar.update(done);
  };
}

}  // namespace

int cmd_convert(int argc, char** argv) {
  std::string vit, qformer, proj, llm, tokenizer, vision_type = "f16", llm_type = "f16", out, name;
  bool llm_only = false, vision_only = false, copy_llm = false, fp16_biases = false;
  int64_t vit_blocks = 0, vit_heads = 0, qf_heads = 0, threads = std::thread::hardware_concurrency();
  float vit_eps = 1e-6f, ln_eps = 1e-5f, qf_eps = 1e-12f;
  Args a("convert",
         "Convert the checkpoints of SkinGPT-4 / MiniGPT-4 into a model folder (docs/convert.md):\n"
         "  MODEL_DIR/vision.gguf  from --vit (LAVIS eva_vit_g.pth), --qformer (BLIP-2, e.g.\n"
         "                         blip2_pretrained_flant5xxl.pth) and --proj (the SkinGPT-4/MiniGPT-4\n"
         "                         checkpoint holding llama_proj)\n"
         "  MODEL_DIR/llm.gguf     from --llm: a Hugging Face LLaMA folder (converted), or a llama GGUF\n"
         "                         (checked and linked, or copied when on another filesystem; never re-quantized)\n"
         "Checkpoints may be PyTorch .pth/.bin (read without executing their pickles) or safetensors.");
  a.option("--vit", &vit, "EVA ViT checkpoint (eva_vit_g.pth)");
  a.option("--qformer", &qformer, "BLIP-2 checkpoint with the Q-Former, query_tokens and ln_vision");
  a.option("--proj", &proj, "SkinGPT-4/MiniGPT-4 checkpoint with llama_proj.weight/.bias");
  a.option("--llm", &llm, "Hugging Face LLaMA folder, or a llama .gguf");
  a.option("--tokenizer", &tokenizer, "SentencePiece tokenizer.model (or a GGUF) when the HF folder has none");
  a.option("-o,--output", &out, "output model folder (created if missing)");
  a.option("--vision-type", &vision_type, "vision matrices: f16, f32, bf16, q8_0");
  a.option("--llm-type", &llm_type, "LLM matrices: f16, f32, bf16, q8_0, q4_0, q4_k, q6_k, q4_k_m");
  a.flag("--llm-only", &llm_only, "write only llm.gguf");
  a.flag("--vision-only", &vision_only, "write only vision.gguf (--llm, if given, only checks the projection width)");
  a.flag("--copy-llm", &copy_llm, "with a GGUF --llm: always copy it instead of symlinking");
  a.option("--vit-blocks", &vit_blocks, "ViT blocks to use; 0 = all but the last, as MiniGPT-4 (39 of 40)");
  a.option("--vit-heads", &vit_heads, "ViT attention heads; 0 = from the width (16 for 1408 or 1024, 12 for 768)");
  a.option("--qf-heads", &qf_heads, "Q-Former attention heads; 0 = from the width (12 for 768)");
  a.option("--vit-eps", &vit_eps, "ViT LayerNorm epsilon");
  a.option("--ln-vision-eps", &ln_eps, "ln_vision LayerNorm epsilon");
  a.option("--qf-eps", &qf_eps, "Q-Former LayerNorm epsilon");
  a.flag("--fp16-biases", &fp16_biases,
         "round Linear/conv biases through fp16 like SkinGPT-4's convert_weights_to_fp16 (stored as f32)");
  a.option("--name", &name, "general.name written to the files");
  a.option("-t,--threads", &threads, "threads for conversion");
  if (!a.parse(argc, argv)) return 0;
  if (out.empty()) throw Error("convert: -o MODEL_DIR is required");
  if (llm_only && vision_only) throw Error("convert: --llm-only and --vision-only exclude each other");
  const bool do_vision = !llm_only, do_llm = !vision_only;
  if (do_vision && (vit.empty() || qformer.empty() || proj.empty()))
    throw Error("convert: vision.gguf needs --vit, --qformer and --proj (or use --llm-only)");
  if (do_llm && llm.empty()) throw Error("convert: llm.gguf needs --llm (or use --vision-only)");
  if (threads < 1) threads = 1;
  const auto llm_scheme = parse_quant_scheme(llm_type);
  if (!llm_scheme) throw Error("convert: unknown --llm-type '" + llm_type + "'");
  const auto vtype = dtype_from_name(vision_type);
  if (!vtype || !vision_type_allowed(*vtype))
    throw Error("convert: --vision-type must be f32, f16, bf16 or q8_0 (got '" + vision_type + "')");

  std::error_code ec;
  fs::create_directories(out, ec);
  if (!fs::is_directory(out)) throw Error(out + ": cannot create the output folder" + (ec ? ": " + ec.message() : ""));
  const std::string vision_path = (fs::path(out) / "vision.gguf").string();
  const std::string llm_path = (fs::path(out) / "llm.gguf").string();

  // The LLM first: its width must match the projection.
  std::optional<HfLlama> hf;
  std::unique_ptr<LlamaModel> gguf_llm;
  int64_t llm_dim = 0;
  std::string llm_desc;
  if (!llm.empty()) {
    if (fs::is_directory(llm)) {
      hf = open_hf_llama(llm);
      llm_dim = hf->config.dim;
      llm_desc = "the LLM (" + (fs::path(llm) / "config.json").string() + ")";
      std::fprintf(stderr, "LLM: %s, weights from %s (%zu tensors)\n", llm.c_str(), hf->weights.c_str(),
                   hf->tensors.size());
    } else if (is_gguf(llm)) {
      gguf_llm = LlamaModel::load(llm, gguf::Residency::Map);  // checks architecture, keys and every tensor
      llm_dim = gguf_llm->config().dim;
      llm_desc = "the LLM (" + llm + ")";
      if (do_llm && a.was_set("--llm-type"))
        throw Error("convert: --llm-type does not apply to a GGUF --llm (it is used as it is; "
                    "run 'skingpt quantize' to change its type)");
      if (do_llm && !tokenizer.empty())
        throw Error("convert: --tokenizer does not apply to a GGUF --llm (its tokenizer is inside the file)");
      if (do_llm && !gguf_llm->file().find("tokenizer.ggml.tokens"))
        std::fprintf(stderr, "warning: %s has no tokenizer; 'skingpt ask' needs one\n", llm.c_str());
    } else {
      throw Error(llm + ": --llm must be a Hugging Face folder or a .gguf file");
    }
  } else if (fs::exists(llm_path)) {
    gguf_llm = LlamaModel::load(llm_path, gguf::Residency::Map);
    llm_dim = gguf_llm->config().dim;
    llm_desc = "the LLM already in the folder (" + llm_path + ")";
  }

  // Tokenizer for an HF conversion.
  std::optional<Vocab> vocab;
  if (do_llm && hf) {
    const std::string tp = !tokenizer.empty() ? tokenizer : hf->tokenizer;
    if (tp.empty()) {
      std::fprintf(stderr,
                   "warning: no tokenizer.model in %s and no --tokenizer: llm.gguf is written without tokenizer "
                   "keys ('skingpt ask' will refuse it; 'skingpt inspect' works)\n",
                   llm.c_str());
    } else {
      vocab = load_vocab(tp);
      if (static_cast<int64_t>(vocab->size()) != hf->config.n_vocab)
        throw Error(tp + ": the tokenizer has " + std::to_string(vocab->size()) + " pieces, but " +
                    (fs::path(llm) / "config.json").string() + " says vocab_size " + std::to_string(hf->config.n_vocab));
    }
  }

  // Vision: read, infer, check everything before writing.
  std::optional<VisionSources> vs;
  VisionConfig vc;
  VisionOptions vo;
  if (do_vision) {
    vs.emplace();
    vs->vit = open_tensor_file(vit);
    vs->qformer = open_tensor_file(qformer);
    vs->proj = open_tensor_file(proj);
    vo.vit_blocks = vit_blocks;
    vo.vit_heads = vit_heads;
    vo.qf_heads = qf_heads;
    if (a.was_set("--vit-eps")) vo.vit_eps = vit_eps;
    if (a.was_set("--ln-vision-eps")) vo.ln_vision_eps = ln_eps;
    if (a.was_set("--qf-eps")) vo.qf_eps = qf_eps;
    vo.fp16_biases = fp16_biases;
    std::vector<std::string> notes;
    vc = infer_vision_config(*vs, vo, &notes);
    for (const auto& n : notes) std::fprintf(stderr, "note: %s\n", n.c_str());
    std::fprintf(stderr,
                 "vision: image %lld, patch %lld, ViT width %lld x %lld blocks, %lld heads, MLP %lld; Q-Former %lld x %lld "
                 "layers, %lld heads, FFN %lld, cross-attention every %lld, %lld queries; projection %lld -> %lld\n",
                 (long long)vc.image_size, (long long)vc.patch_size, (long long)vc.vit_width, (long long)vc.vit_depth,
                 (long long)vc.vit_heads, (long long)vc.vit_ffn, (long long)vc.qf_width, (long long)vc.qf_depth,
                 (long long)vc.qf_heads, (long long)vc.qf_ffn, (long long)vc.qf_cross_freq, (long long)vc.n_query,
                 (long long)vc.qf_width, (long long)vc.llm_dim);
    if (llm_dim && vc.llm_dim != llm_dim)
      throw Error(proj + ": llama_proj maps " + std::to_string(vc.qf_width) + " -> " + std::to_string(vc.llm_dim) +
                  ", but " + llm_desc + " has hidden size " + std::to_string(llm_dim) +
                  " (a 7B projection needs a 7B LLM, 13B needs 13B)");
    if (!llm_dim) std::fprintf(stderr, "warning: no LLM given; the projection's width %lld is not checked\n",
                               (long long)vc.llm_dim);
  }

  // Check the LLM's tensors too before anything is written.
  std::vector<std::string> llm_notes;
  if (do_llm && hf) check_hf_llama(*hf, *llm_scheme, &llm_notes);

  ThreadPool pool(static_cast<int>(threads));
  if (do_vision) {
    Progress bar("vision.gguf", 0, "B");
    const std::string nm = !name.empty() ? name
                                         : "SkinGPT-4 vision (" + fs::path(vit).stem().string() + " + " +
                                               fs::path(qformer).stem().string() + " + " + fs::path(proj).stem().string() + ")";
    convert_vision(*vs, vc, *vtype, vo, vision_path, nm, pool, bar_callback(bar));
    bar.finish();
    std::printf("wrote %s (%s matrices, %s)\n", vision_path.c_str(), vision_type.c_str(),
                human_bytes(fs::file_size(vision_path)).c_str());
  }
  if (do_llm && hf) {
    Progress bar("llm.gguf", 0, "B");
    std::string nm = !name.empty() ? name : fs::path(llm).lexically_normal().filename().string();
    if (nm.empty() || nm == ".") nm = fs::absolute(llm).lexically_normal().parent_path().filename().string();
    for (const auto& n : llm_notes) std::fprintf(stderr, "note: %s\n", n.c_str());
    convert_hf_llama(*hf, *llm_scheme, vocab ? &*vocab : nullptr, llm_path, nm.empty() ? "llama" : nm, pool,
                     bar_callback(bar));
    bar.finish();
    std::printf("wrote %s (%s, %s%s)\n", llm_path.c_str(), llm_scheme->name().c_str(),
                human_bytes(fs::file_size(llm_path)).c_str(), vocab ? "" : ", no tokenizer");
  } else if (do_llm) {
    Progress bar("llm.gguf (copy)", 0, "B");
    gguf_llm.reset();
    const std::string how = place_llm_gguf(llm, llm_path, copy_llm, bar_callback(bar));
    if (how == "copy") bar.finish();
    if (how == "symlink")
      std::printf("llm.gguf: symlink to %s (same filesystem; not re-quantized)\n",
                  fs::canonical(llm).c_str());
    else if (how == "copy")
      std::printf("llm.gguf: copied from %s (%s; not re-quantized)\n", llm.c_str(),
                  copy_llm ? "--copy-llm" : "another filesystem");
    else
      std::printf("llm.gguf: %s is already the model folder's llm.gguf\n", llm.c_str());
  }
  return 0;
}

int cmd_quantize(int argc, char** argv) {
  std::string in, out, type;
  int64_t threads = std::thread::hardware_concurrency();
  Args a("quantize",
         "Rewrite a GGUF with other weight types. TYPE: f32 f16 bf16 q8_0 q4_0 q4_k q6_k q4_k_m.\n"
         "llama files: norms stay f32; q4_k_m is llama.cpp's mix (docs/llama-gguf.md). Vision files\n"
         "(skingpt_vision) take f32, f16, bf16 or q8_0 only. Metadata is copied, general.file_type updated;\n"
         "the output is written to OUT.tmp and renamed when complete.");
  a.positional("IN", &in, "input .gguf");
  a.positional("OUT", &out, "output .gguf (must differ from IN)");
  a.positional("TYPE", &type, "target type");
  a.option("-t,--threads", &threads, "threads");
  if (!a.parse(argc, argv)) return 0;
  ThreadPool pool(static_cast<int>(std::max<int64_t>(1, threads)));
  Progress bar("quantize " + fs::path(out).filename().string(), 0, "B");
  const auto rep = quantize_gguf(in, out, type, pool, bar_callback(bar));
  bar.finish();
  for (const auto& n : rep.notes) std::fprintf(stderr, "warning: %s\n", n.c_str());
  std::printf("wrote %s (%s, %s → %s; %llu tensors converted, %llu copied)\n", out.c_str(), rep.arch.c_str(),
              human_bytes(fs::file_size(in)).c_str(), human_bytes(fs::file_size(out)).c_str(),
              (unsigned long long)rep.tensors_converted, (unsigned long long)rep.tensors_copied);
  return 0;
}

}  // namespace sg::app
