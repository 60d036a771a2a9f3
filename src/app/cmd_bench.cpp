// `skingpt bench`: llama-bench-like figures for a llama GGUF — prompt
// processing (pp) and generation (tg) tokens/s, achieved GOP/s, peak RSS, and
// the machine's measured read bandwidth, so the generation speed can be read
// as a fraction of what the memory bus allows.
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "app/args.h"
#include "app/commands.h"
#include "app/eval_common.h"
#include "clinic/calibration_file.h"
#include "clinic/consultation.h"
#include "core/error.h"
#include "core/matmul.h"
#include "core/threads.h"
#include "formats/gguf.h"
#include "formats/preprocess.h"
#include "model/llama.h"
#include "model/skingpt.h"
#include "model/vision.h"

namespace sg::app {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// In MB (10^6 bytes), like file_mb and kv_cache_mb, so they add up.
double peak_rss_mb() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss * 1024.0 / 1e6;
}

// Best-of-5 read bandwidth over a 1 GiB buffer, split across the pool. The
// loop keeps eight 16-byte accumulators so it issues loads as fast as the
// core can (a scalar sum is add-bound and under-reads the bus, which made the
// generation speed look faster than the memory allows).
double read_bandwidth_gbs(ThreadPool& pool) {
  using u64x2 = uint64_t __attribute__((vector_size(16)));
  constexpr int64_t kLanes = 8;  // accumulators of 16 bytes: 128 bytes per step
  const size_t n = (size_t(1) << 30) / sizeof(u64x2);
  std::vector<u64x2> buf(n);
  for (size_t i = 0; i < n; ++i) buf[i] = u64x2{i, i + 1};
  std::vector<uint64_t> sink(pool.size());
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = clock_type::now();
    pool.parallel_for(static_cast<int64_t>(n / kLanes), [&](int64_t b, int64_t e, int th) {
      u64x2 acc[kLanes] = {};
      const u64x2* p = buf.data();
      for (int64_t i = b; i < e; ++i)
        for (int64_t j = 0; j < kLanes; ++j) acc[j] ^= p[i * kLanes + j];
      uint64_t x = 0;
      for (const auto& a : acc) x ^= a[0] ^ a[1];
      sink[th] ^= x;
    });
    best = std::max(best, n * sizeof(u64x2) / seconds_since(t0) / 1e9);
  }
  volatile uint64_t keep = sink[0];
  (void)keep;
  return best;
}

// Image-encode timing of a vision GGUF on a synthetic 600×450 photo:
// preprocess (resize + normalise), ViT, Q-Former + projection; best of reps.
int bench_vision(const std::string& path, int64_t threads, int64_t reps, bool json, gguf::Residency residency) {
  auto m = VisionModel::load(path, residency);
  const auto& c = m->config();
  ThreadPool pool(static_cast<int>(threads));
  Image photo;
  photo.width = 600;
  photo.height = 450;
  photo.rgb.resize(600 * 450 * 3);
  std::mt19937 rng(3);
  for (auto& p : photo.rgb) p = static_cast<uint8_t>(rng());
  m->file().touch_all();
  double pre_best = 1e30, vit_best = 1e30, qf_best = 1e30, total_best = 1e30;
  for (int64_t r = 0; r < reps + 1; ++r) {  // the first run warms up
    const auto t0 = clock_type::now();
    const int size = static_cast<int>(c.image_size);
    const auto chw = to_normalized_chw(resize_bicubic(photo, size, size), {c.mean[0], c.mean[1], c.mean[2]},
                                       {c.std[0], c.std[1], c.std[2]});
    const double pre = seconds_since(t0) * 1e3;
    EncodeTimings t;
    m->encode(chw.data(), pool, {}, &t);
    if (r == 0) continue;
    pre_best = std::min(pre_best, pre);
    vit_best = std::min(vit_best, t.vit_ms);
    qf_best = std::min(qf_best, t.qformer_ms);
    total_best = std::min(total_best, pre + t.vit_ms + t.qformer_ms);
  }
  const double gflops = c.flops() / ((vit_best + qf_best) * 1e-3) / 1e9;
  const double rss = peak_rss_mb();
  if (json) {
    std::printf(
        "{\"model\": \"%s\", \"threads\": %lld, \"simd\": \"%s\", \"encode_ms\": %.1f, "
        "\"preprocess_ms\": %.2f, \"vit_ms\": %.1f, \"qformer_ms\": %.1f, \"gflop_per_image\": %.1f, "
        "\"gflops\": %.1f, \"peak_rss_mb\": %.1f}\n",
        path.c_str(), (long long)threads, simd_path(), total_best, pre_best, vit_best, qf_best, c.flops() / 1e9,
        gflops, rss);
  } else {
    std::printf("vision model %s (%.1f MB)\n", path.c_str(), m->file().file_size() / 1e6);
    std::printf("threads      %lld  simd %s\n", (long long)threads, simd_path());
    std::printf("preprocess   %8.2f ms\n", pre_best);
    std::printf("ViT          %8.1f ms\n", vit_best);
    std::printf("Q-Former+proj%8.1f ms\n", qf_best);
    std::printf("encode total %8.1f ms   %.1f GFLOP/image → %.1f GFLOP/s\n", total_best, c.flops() / 1e9, gflops);
    std::printf("peak RSS     %8.1f MB\n", rss);
  }
  return 0;
}

// The whole `skingpt describe` of one photo with a model folder: load, then
// the consultation (quality, encode, score, four answers) `reps` times with
// the describe defaults; prints each stage's best time.
int bench_describe(const std::string& image, const std::string& model_dir, int64_t threads, int64_t reps,
                   bool json, gguf::Residency residency) {
  const std::string dir = clinic::find_model_dir(model_dir, self_exe_path());
  auto t0 = clock_type::now();
  auto model = SkinGptModel::load(dir, residency);
  const clinic::Catalogue cat = clinic::Catalogue::resolve("", dir);
  const auto cal = clinic::find_calibration(dir, clinic::Language::En, cat, nullptr);
  const double load_ms = seconds_since(t0) * 1e3;
  ThreadPool pool(static_cast<int>(threads));
  clinic::Consultant consultant(*model, cat, cal.value_or(clinic::Calibration{}), pool);
  clinic::Timings best;
  best.total_ms = 1e30;
  double decode_best = 1e30;
  for (int64_t r = 0; r < reps; ++r) {
    t0 = clock_type::now();
    const Image img = decode_image(image);
    const double decode_ms = seconds_since(t0) * 1e3;
    const clinic::Report rep = consultant.consult(img, {}, clinic::Language::En);
    if (!rep.assessed) throw Error(image + ": the photo was refused by the quality check; bench another one");
    decode_best = std::min(decode_best, decode_ms);
    if (rep.timings.total_ms + decode_ms < best.total_ms) {
      best = rep.timings;
      best.total_ms += decode_ms;
    }
  }
  if (json) {
    std::printf("{\"model\": \"%s\", \"threads\": %lld, \"load_ms\": %.1f, \"decode_ms\": %.1f, "
                "\"quality_ms\": %.1f, \"encode_ms\": %.1f, \"score_ms\": %.1f, \"questions_ms\": %.1f, "
                "\"describe_ms\": %.1f}\n",
                dir.c_str(), (long long)threads, load_ms, decode_best, best.quality_ms, best.encode_ms,
                best.score_ms, best.questions_ms, best.total_ms);
  } else {
    std::printf("describe     %s with %s, %lld threads, best of %lld\n", image.c_str(), dir.c_str(),
                (long long)threads, (long long)reps);
    std::printf("load model   %8.1f ms (once)\n", load_ms);
    std::printf("decode       %8.1f ms\n", decode_best);
    std::printf("quality      %8.1f ms (photo checks, lesion measurement)\n", best.quality_ms);
    std::printf("encode       %8.1f ms (ViT + Q-Former)\n", best.encode_ms);
    std::printf("score        %8.1f ms (differential)\n", best.score_ms);
    std::printf("answers      %8.1f ms (four questions)\n", best.questions_ms);
    std::printf("describe     %8.1f ms (decode to report, model loaded)\n", best.total_ms);
  }
  return 0;
}

}  // namespace

int cmd_bench(int argc, char** argv) {
  std::string model_path, vision_path, describe_image, model_dir;
  int64_t threads = std::thread::hardware_concurrency(), n_prompt = 128, n_gen = 64, reps = 3;
  bool json = false, mmap = false;
  Args a("bench",
         "Measure a llama GGUF like llama-bench: pp (a batch of prompt tokens from an empty context)\n"
         "and tg (tokens generated one at a time) in tokens/s, best of the repetitions.");
  a.option("-m,--model", &model_path, "llama GGUF file");
  a.option("--vision", &vision_path, "vision GGUF: measure image encoding instead");
  a.option("--describe", &describe_image, "photo: measure the whole 'skingpt describe' with a model folder instead");
  a.option("--model-dir", &model_dir, "with --describe: model folder (default: models/skingpt-mini)");
  a.option("-t,--threads", &threads, "threads");
  a.option("-p,--n-prompt", &n_prompt, "prompt tokens for pp");
  a.option("-n,--n-gen", &n_gen, "generated tokens for tg");
  a.option("-r,--repetitions", &reps, "repetitions (the best is reported)");
  a.flag("--json", &json, "print one JSON object");
  a.flag("--mmap", &mmap, kMmapHelp);
  if (!a.parse(argc, argv)) return 0;
  if (threads < 1 || threads > 256) throw Error("bench: --threads must be in 1..256");
  if (!vision_path.empty()) return bench_vision(vision_path, threads, reps, json, residency(mmap));
  if (!describe_image.empty()) return bench_describe(describe_image, model_dir, threads, reps, json, residency(mmap));
  if (model_path.empty()) throw Error("bench: -m MODEL (or --vision V) is required");
  if (n_prompt < 1 || n_gen < 1 || reps < 1) throw Error("bench: -p, -n and -r must be >= 1");

  const auto t_load = clock_type::now();
  auto model = LlamaModel::load(model_path, residency(mmap));
  const double load_s = seconds_since(t_load);
  const auto& c = model->config();
  ThreadPool pool(static_cast<int>(threads));
  LlamaContext ctx(*model, n_prompt + n_gen, pool);
  std::mt19937 rng(1);
  std::vector<int32_t> toks(n_prompt);
  for (auto& t : toks) t = static_cast<int32_t>(rng() % c.n_vocab);

  model->file().touch_all();  // pages untouched for a minute may have been reclaimed
  ctx.eval_tokens({toks.data(), 1});  // warm-up: scratch buffers, page tables
  double pp_best = 0, tg_best = 0;
  for (int64_t r = 0; r < reps; ++r) {
    ctx.truncate(0);
    auto t0 = clock_type::now();
    ctx.eval_tokens(toks);
    pp_best = std::max(pp_best, n_prompt / seconds_since(t0));
    ctx.truncate(0);
    t0 = clock_type::now();
    for (int64_t i = 0; i < n_gen; ++i) ctx.eval_tokens({&toks[i % n_prompt], 1});
    tg_best = std::max(tg_best, n_gen / seconds_since(t0));
  }
  const double rss = peak_rss_mb();
  const uint64_t wbytes = model->weight_bytes_per_token();
  const double bw = read_bandwidth_gbs(pool);
  // Multiply-adds per token in the weight matrices: one per weight element.
  uint64_t params = 0;
  for (const auto& l : model->layers)
    for (const WeightView* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      params += static_cast<uint64_t>(w->rows) * w->cols;
  params += static_cast<uint64_t>(model->output.rows) * model->output.cols;
  const double pp_gops = 2.0 * params * pp_best / 1e9;
  const double tg_frac = tg_best * wbytes / (bw * 1e9);
  const double file_mb = model->file().file_size() / 1e6;
  const char* weights = model->file().residency() == gguf::Residency::Load ? "loaded" : "mapped";
  if (json) {
    std::printf(
        "{\"model\": \"%s\", \"threads\": %lld, \"simd\": \"%s\", \"n_prompt\": %lld, \"n_gen\": %lld, "
        "\"pp_tok_s\": %.3f, \"tg_tok_s\": %.3f, \"pp_gops\": %.2f, \"peak_rss_mb\": %.1f, "
        "\"file_mb\": %.1f, \"kv_cache_mb\": %.1f, \"weights_bytes\": %llu, \"read_bw_gbs\": %.2f, "
        "\"tg_bw_fraction\": %.3f, \"weights\": \"%s\", \"load_s\": %.2f}\n",
        model_path.c_str(), (long long)threads, simd_path(), (long long)n_prompt, (long long)n_gen, pp_best,
        tg_best, pp_gops, rss, file_mb,
        ctx.kv_bytes() / 1e6, (unsigned long long)wbytes, bw, tg_frac, weights, load_s);
  } else {
    std::printf("model        %s (%.1f MB, %lld layers, dim %lld)\n", model_path.c_str(), file_mb,
                (long long)c.n_layers, (long long)c.dim);
    std::printf("threads      %lld  simd %s\n", (long long)threads, simd_path());
    std::printf("weights      %s in %.2f s\n", weights, load_s);
    std::printf("pp%-4lld      %8.2f tok/s   %7.1f GOP/s\n", (long long)n_prompt, pp_best, pp_gops);
    std::printf("tg%-4lld      %8.2f tok/s   %.2f GB/token → %.1f GB/s = %.2f of read bandwidth\n",
                (long long)n_gen, tg_best, wbytes / 1e9, tg_best * wbytes / 1e9, tg_frac);
    std::printf("peak RSS     %8.1f MB\n", rss);
    std::printf("read bw      %8.2f GB/s (%lld threads)\n", bw, (long long)threads);
  }
  return 0;
}

}  // namespace sg::app
