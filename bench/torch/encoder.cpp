// The image encoder in PyTorch (libtorch 1.13, the library behind Debian's
// python3-torch), for comparison with `skingpt bench --vision`: the same
// ViT-g/14 + Q-Former + projection graph the trainer uses (train/model.cpp,
// the original parameter names and math), random weights, one 224×224 image,
// fp32, bf16 autocast (torch.autocast("cpu", dtype=torch.bfloat16)), and the
// ViT's weights stored in bf16 under autocast (as MiniGPT-4 stores its ViT in
// half precision), which saves autocast's per-run weight casts.
//
//   bench_torch_encoder [-t THREADS] [--runs N] [--skip-fp32] [--json]
//
// Not part of CI: it needs ~5 GB and a minute.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "train/model.h"

namespace {

double median_ms(const std::function<void()>& f, int runs) {
  f();  // warm-up: first-touch of buffers, oneDNN kernel selection
  std::vector<double> ms;
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int threads = 2, runs = 3;
  bool fp32 = true, json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "-t" || a == "--threads") && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = std::atoi(argv[++i]);
    else if (a == "--skip-fp32") fp32 = false;
    else if (a == "--json") json = true;
    else {
      std::fprintf(stderr,
                   "usage: bench_torch_encoder [-t THREADS] [--runs N] [--skip-fp32] [--json]\n"
                   "EVA ViT-g/14 + Q-Former + projection in libtorch, random weights, one image.\n");
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (threads < 1 || threads > 256 || runs < 1 || runs > 100) {
    std::fprintf(stderr, "error: -t must be in 1..256 and --runs in 1..100\n");
    return 2;
  }
  at::set_num_threads(threads);
  at::set_num_interop_threads(1);

  sg::train::ModelConfig c;  // VisionConfig's defaults: ViT-g/14 (39 blocks), BLIP-2 Q-Former, 768→5120
  c.parts.vit = c.parts.qformer = c.parts.proj = true;
  sg::train::check_config(c);
  sg::train::Net net(c);
  net.init(1);
  const double gflop = c.vision.flops() / 1e9;
  const at::Tensor image = at::randn({1, 3, c.vision.image_size, c.vision.image_size});
  c10::InferenceMode guard;

  // One encode under torch.autocast("cpu", dtype=torch.bfloat16).
  at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
  auto autocast_encode = [&](const at::Tensor& x) {
    at::autocast::set_cpu_enabled(true);
    net.encode_image(x);
    at::autocast::set_cpu_enabled(false);
    at::autocast::clear_cache();
  };
  double fp32_ms = 0;
  if (fp32) fp32_ms = median_ms([&] { net.encode_image(image); }, runs);
  const double bf16_ms = median_ms([&] { autocast_encode(image); }, runs);

  // visual_encoder.to(torch.bfloat16): the ViT's parameters converted once, in place.
  for (size_t i = 0; i < net.names().size(); ++i) {
    if (sg::train::param_group(net.names()[i]) != "vit") continue;
    at::Tensor handle = net.tensors()[i];  // shares the parameter's TensorImpl
    handle.set_data(handle.to(at::kBFloat16));
  }
  const at::Tensor image_bf16 = image.to(at::kBFloat16);
  const double bf16w_ms = median_ms([&] { autocast_encode(image_bf16); }, runs);

  if (json) {
    std::printf("{\"threads\": %d, \"gflop\": %.1f, \"fp32_ms\": %.1f, \"bf16_autocast_ms\": %.1f, \"bf16_vit_weights_ms\": %.1f}\n",
                threads, gflop, fp32_ms, bf16_ms, bf16w_ms);
  } else {
    std::printf("libtorch %d.%d, %d threads, %.1f GFLOP per image (median of %d)\n", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, threads, gflop,
                runs);
    if (fp32) std::printf("  fp32            %8.0f ms  %6.0f GFLOP/s\n", fp32_ms, gflop / fp32_ms * 1e3);
    std::printf("  bf16 autocast   %8.0f ms  %6.0f GFLOP/s\n", bf16_ms, gflop / bf16_ms * 1e3);
    std::printf("  bf16 ViT weights + autocast %6.0f ms  %6.0f GFLOP/s\n", bf16w_ms, gflop / bf16w_ms * 1e3);
  }
  return 0;
}
