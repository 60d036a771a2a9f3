// Kernel benchmark: y = x · Wᵀ for every weight type, matrix-vector (m=1,
// decode) and matrix-matrix (m=128, prefill; m=257, vision encoder), 1 and 2
// threads, on every SIMD path this CPU has (scalar skipped unless asked).
//
//   bench_kernels [--quick] [--paths avx512vnni,avx2,scalar] [--types q4_k,q8_0] [--reps N]
//                 [--shape ROWS,COLS,M ...] [--threads 1,2]
//
// For m=1 the weights are cycled through several copies totalling >= 192 MB
// so they come from DRAM, not the 32 MB L3 (as in real decoding); "dec-hot"
// is a 256-row matrix that stays in L2 and shows the kernel's own speed. Numbers are
// the best of --reps repetitions; the machine is shared, so compare ratios
// within one run.
#include <algorithm>
#include <chrono>
#include <ctime>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "core/matmul.h"
#include "core/quant.h"
#include "core/threads.h"

namespace {

using Clock = std::chrono::steady_clock;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t p = 0;
  while (p <= s.size()) {
    const size_t q = s.find(',', p);
    out.push_back(s.substr(p, q == std::string::npos ? std::string::npos : q - p));
    if (q == std::string::npos) break;
    p = q + 1;
  }
  return out;
}

// Weights with realistic values (no NaN/denormal surprises), filled fast:
// random codes, plausible scales.
std::vector<uint8_t> make_weights(sg::DType t, int64_t rows, int64_t cols, uint32_t seed) {
  const size_t rb = sg::row_bytes(t, cols);
  std::vector<uint8_t> w(rb * rows + 64);
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i + 8 <= w.size(); i += 8) {  // xorshift: fast, good enough for codes
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    std::memcpy(&w[i], &state, 8);
  }
  const uint16_t d = sg::f32_to_f16(0.01f);
  for (int64_t r = 0; r < rows; ++r) {
    uint8_t* row = w.data() + r * rb;
    switch (t) {
      case sg::DType::F32: {
        auto* f = reinterpret_cast<float*>(row);
        for (int64_t c = 0; c < cols; ++c) f[c] = static_cast<float>(static_cast<int8_t>(row[4 * c])) * 1e-3f;
        break;
      }
      case sg::DType::F16:
      case sg::DType::BF16: {
        auto* h = reinterpret_cast<uint16_t*>(row);
        for (int64_t c = 0; c < cols; ++c) {
          const float v = static_cast<float>(static_cast<int8_t>(row[2 * c])) * 1e-3f;
          h[c] = t == sg::DType::F16 ? sg::f32_to_f16(v) : sg::f32_to_bf16(v);
        }
        break;
      }
      case sg::DType::Q8_0:
        for (int64_t b = 0; b < cols / 32; ++b) std::memcpy(row + b * 34, &d, 2);
        break;
      case sg::DType::Q4_0:
        for (int64_t b = 0; b < cols / 32; ++b) std::memcpy(row + b * 18, &d, 2);
        break;
      case sg::DType::Q4_K:
        for (int64_t b = 0; b < cols / 256; ++b) {
          std::memcpy(row + b * 144, &d, 2);
          std::memcpy(row + b * 144 + 2, &d, 2);
        }
        break;
      case sg::DType::Q6_K:
        for (int64_t b = 0; b < cols / 256; ++b) std::memcpy(row + b * 210 + 208, &d, 2);
        break;
      default: break;
    }
  }
  return w;
}

struct Result {
  double sec;
  double gbs;   // weight bytes per second (GB/s)
  double gops;  // 2*m*rows*cols per second (G ops/s)
  double cpu_gbs, cpu_gops;  // same per second of this thread's CPU time (1 thread only; 0 otherwise)
};

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

Result bench(sg::DType t, int64_t rows, int64_t cols, int64_t m, int threads, int reps, bool hot) {
  const size_t bytes = sg::row_bytes(t, cols) * rows;
  const int copies = m == 1 && !hot ? static_cast<int>(std::max<size_t>(1, (192u << 20) / bytes + 1)) : 1;
  std::vector<std::vector<uint8_t>> ws;
  for (int c = 0; c < copies; ++c) ws.push_back(make_weights(t, rows, cols, 1 + c));
  std::vector<float> x(static_cast<size_t>(m * cols));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  std::vector<float> y(static_cast<size_t>(m * rows));
  sg::ThreadPool pool(threads);
  auto once = [&](int c) {
    sg::WeightView wv{t, ws[c].data(), rows, cols};
    sg::matmul(wv, x.data(), m, y.data(), pool);
  };
  for (int c = 0; c < copies; ++c) once(c);  // warm-up (scratch, page faults)
  // Enough calls per repetition to last >= ~0.2 s.
  auto t0 = Clock::now();
  once(0);
  const double one = std::chrono::duration<double>(Clock::now() - t0).count();
  const int calls = std::max(copies, static_cast<int>(std::ceil(0.2 / std::max(one, 1e-6))));
  double best = 1e30, best_cpu = 1e30;
  for (int r = 0; r < reps; ++r) {
    const double c0 = thread_cpu_seconds();
    t0 = Clock::now();
    for (int i = 0; i < calls; ++i) once(i % copies);
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / calls);
    best_cpu = std::min(best_cpu, (thread_cpu_seconds() - c0) / calls);
  }
  const double ops = 2.0 * m * rows * cols;
  if (threads != 1) best_cpu = INFINITY;
  return {best, bytes / best / 1e9, ops / best / 1e9, bytes / best_cpu / 1e9, ops / best_cpu / 1e9};
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> paths;
  for (const char* p : sg::available_simd_paths())
    if (std::string(p) != "scalar") paths.push_back(p);
  std::vector<std::string> types = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q6_k"};
  int reps = 3;
  bool quick = false;
  std::vector<std::vector<std::string>> custom;
  std::vector<int> thread_counts = {1, 2};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--paths" && i + 1 < argc) paths = split(argv[++i]);
    else if (a == "--types" && i + 1 < argc) types = split(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--quick") quick = true;
    else if (a == "--shape" && i + 1 < argc) custom.push_back(split(argv[++i]));
    else if (a == "--threads" && i + 1 < argc) {
      thread_counts.clear();
      for (const auto& t : split(argv[++i])) thread_counts.push_back(std::max(1, std::atoi(t.c_str())));
    }
    else {
      std::fprintf(stderr, "usage: %s [--quick] [--paths a,b] [--types t1,t2] [--reps N] [--shape R,C,M] [--threads 1,2]\n",
                   argv[0]);
      return 2;
    }
  }
  struct Shape {
    int64_t rows, cols, m;
    const char* what;
    bool hot;  // weights stay in cache: measures the kernel, not DRAM
  };
  std::vector<Shape> shapes = {{4096, 4096, 1, "decode", false},    {11008, 4096, 1, "decode", false},
                               {1024, 4096, 1, "dec-hot", true},     {4096, 4096, 128, "prefill", false},
                               {11008, 4096, 128, "prefill", false}, {6144, 1408, 257, "vit-mlp", false}};
  if (quick) shapes = {{4096, 4096, 1, "decode", false}, {1024, 4096, 1, "dec-hot", true}, {4096, 4096, 128, "prefill", false}};
  if (!custom.empty()) {
    shapes.clear();
    for (const auto& c : custom) {
      if (c.size() != 3) {
        std::fprintf(stderr, "--shape wants ROWS,COLS,M\n");
        return 2;
      }
      shapes.push_back({std::atoll(c[0].c_str()), std::atoll(c[1].c_str()), std::atoll(c[2].c_str()), "custom", false});
    }
  }
  // cpu-GB/s, cpu-GOP/s: per second of the calling thread's CPU time (1
  // thread only), a steadier figure than wall time when other processes share
  // the cores (still affected by their use of caches and memory bandwidth).
  std::printf("%-11s %-5s %-8s %6s %6s %4s %3s %10s %9s %9s %9s %9s\n", "path", "type", "what", "rows", "cols", "m",
              "thr", "ms/call", "GB/s", "GOP/s", "cpu-GB/s", "cpu-GOP/s");
  for (const auto& p : paths) {
    if (!sg::force_simd_path(p.c_str())) {
      std::printf("%s: not available on this CPU\n", p.c_str());
      continue;
    }
    for (const auto& tn : types) {
      const auto t = sg::dtype_from_name(tn);
      if (!t) {
        std::printf("unknown type %s\n", tn.c_str());
        continue;
      }
      for (const auto& s : shapes) {
        if ((*t == sg::DType::Q4_K || *t == sg::DType::Q6_K) && s.cols % 256) continue;
        for (int th : thread_counts) {
          const Result r = bench(*t, s.rows, s.cols, s.m, th, reps, s.hot);
          std::printf("%-11s %-5s %-8s %6lld %6lld %4lld %3d %10.3f %9.1f %9.1f", p.c_str(), tn.c_str(), s.what,
                      static_cast<long long>(s.rows), static_cast<long long>(s.cols), static_cast<long long>(s.m),
                      th, r.sec * 1e3, r.gbs, r.gops);
          if (r.cpu_gops > 0) std::printf(" %9.1f %9.1f", r.cpu_gbs, r.cpu_gops);
          std::printf("\n");
          std::fflush(stdout);
        }
      }
    }
  }
  return 0;
}
