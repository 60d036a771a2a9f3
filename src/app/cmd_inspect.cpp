// `skingpt inspect`: the pipeline with the prompt given as token ids, writing
// raw tensors for comparison with a reference implementation.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "app/args.h"
#include "app/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "formats/image.h"
#include "model/skingpt.h"
#include "text/sampler.h"

namespace sg::app {

namespace {

std::vector<std::vector<int32_t>> parse_segments(const std::string& s, int64_t n_vocab) {
  std::vector<std::vector<int32_t>> segs(1);
  std::string num;
  auto flush = [&] {
    if (num.empty()) return;
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(num, &used);
    } catch (const std::exception&) {
    }
    if (used != num.size() || v < 0 || v >= n_vocab)
      throw Error("--prompt-ids: '" + num + "' is not a token id in 0.." + std::to_string(n_vocab - 1));
    segs.back().push_back(static_cast<int32_t>(v));
    num.clear();
  };
  for (char c : s) {
    if (c == ',' || c == ' ') flush();
    else if (c == '|') {
      flush();
      segs.emplace_back();
    } else num += c;
  }
  flush();
  if (segs.size() > 2) throw Error("--prompt-ids: at most one '|' (where the image goes)");
  return segs;
}

void write_f32(const std::string& path, const float* d, size_t n) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(d), static_cast<std::streamsize>(n * sizeof(float)));
  if (!f) throw Error(path + ": cannot write");
}

}  // namespace

int cmd_inspect(int argc, char** argv) {
  std::string vision, llm, image, ids, out;
  int64_t greedy = 0, threads = std::thread::hardware_concurrency();
  bool orient = false;
  Args a("inspect",
         "Run the pipeline on an image with the prompt given as token ids, for exactness checks.\n"
         "Writes DIR/image_embeds.f32 [n_query × d_llm], DIR/logits.f32 [n_tokens × vocab] and,\n"
         "with --greedy N, DIR/greedy.txt (raw little-endian float32; ids space-separated).");
  a.option("--vision", &vision, "vision GGUF");
  a.option("--llm", &llm, "llama GGUF");
  a.option("--image", &image, "image file (decoded like Pillow: no EXIF rotation unless --exif-rotate)");
  a.option("--prompt-ids", &ids, "ids of the two segments, comma-separated, '|' where the image goes; used as given (no BOS added)");
  a.option("--greedy", &greedy, "also generate N greedy tokens");
  a.option("--out", &out, "output folder (created if missing)");
  a.flag("--exif-rotate", &orient, "apply EXIF orientation before preprocessing");
  a.option("-t,--threads", &threads, "threads");
  if (!a.parse(argc, argv)) return 0;
  if (vision.empty() || llm.empty() || image.empty() || ids.empty() || out.empty())
    throw Error("inspect: --vision, --llm, --image, --prompt-ids and --out are all required");
  if (greedy < 0) throw Error("inspect: --greedy must be >= 0");
  auto m = SkinGptModel::load(vision, llm);
  const auto segs = parse_segments(ids, m->llm->config().n_vocab);
  ThreadPool pool(static_cast<int>(std::max<int64_t>(1, threads)));
  DecodeOptions dopt;
  dopt.apply_orientation = orient;
  const auto chw = m->preprocess(decode_image(image, dopt));
  const auto embeds = m->vision->encode(chw.data(), pool);
  const int64_t dim = m->llm->config().dim, nv = m->llm->config().n_vocab;
  std::vector<float> seq;
  for (size_t s = 0; s < segs.size(); ++s) {
    std::vector<float> e(segs[s].size() * dim);
    m->llm->embed(segs[s], e.data());
    seq.insert(seq.end(), e.begin(), e.end());
    if (s == 0 && segs.size() == 2) seq.insert(seq.end(), embeds.begin(), embeds.end());
  }
  const int64_t n = static_cast<int64_t>(seq.size()) / dim;
  if (n == 0) throw Error("inspect: the prompt is empty");
  LlamaContext ctx(*m->llm, n + greedy + 1, pool);
  ctx.eval_embeddings(seq.data(), n, true);
  std::filesystem::create_directories(out);
  write_f32(out + "/image_embeds.f32", embeds.data(), embeds.size());
  write_f32(out + "/logits.f32", ctx.logits().data(), ctx.logits().size());
  if (greedy > 0) {
    std::ostringstream g;
    std::vector<float> last(ctx.logits().end() - nv, ctx.logits().end());
    for (int64_t i = 0; i < greedy; ++i) {
      const int32_t id = argmax(last);
      g << (i ? " " : "") << id;
      ctx.eval_tokens({&id, 1});
      last.assign(ctx.logits().end() - nv, ctx.logits().end());
    }
    std::ofstream(out + "/greedy.txt") << g.str() << "\n";
  }
  std::fprintf(stderr, "wrote %s: %lld positions, %lld image queries\n", out.c_str(), (long long)n,
               (long long)m->vision->config().n_query);
  return 0;
}

}  // namespace sg::app
