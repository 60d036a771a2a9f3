// Pillow-exact bicubic resize and torchvision-exact normalisation.
//
// The resampler follows the algorithm of Pillow's libImaging/Resample.c
// (ImagingResampleInner, precompute_coeffs, normalize_coeffs_8bpc,
// ImagingResample{Horizontal,Vertical}_8bpc), written afresh:
//   * per axis, scale = in / out; filterscale = max(scale, 1); the bicubic
//     kernel (a = -0.5, support 2) is stretched by filterscale, so a downscale
//     averages over the whole footprint (antialiasing);
//   * output sample i is centred at (i + 0.5) * scale; taps run from
//     (int)(center - support + 0.5) to (int)(center + support + 0.5), clamped
//     to the image, tap j weighted by K((j - center + 0.5) / filterscale);
//     weights are divided by their sum, then turned into 22-bit fixed point
//     rounding half away from zero;
//   * pass 1 is horizontal (only when the width changes), pass 2 vertical (only
//     when the height changes); each pass accumulates from 1 << 21 (so the
//     shift rounds) and clips to 0..255 (arithmetic shift right by 22).
#include "formats/preprocess.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "core/error.h"

// Weights must be computed exactly as Pillow's C does: no fused multiply-add
// (only possible when the file is built with -mfma, but cheap to rule out).
// GCC gets a function attribute on the two cold functions that compute them
// (a file-wide optimize pragma would block inlining into the hot loops).
#if defined(__clang__)
#pragma clang fp contract(off)
#define SG_NO_FP_CONTRACT
#elif defined(__GNUC__)
#define SG_NO_FP_CONTRACT __attribute__((optimize("fp-contract=off")))
#else
#define SG_NO_FP_CONTRACT
#endif

namespace sg {

// Python floats rounded to float32 (double literal -> float, as torch does).
const std::array<float, 3> kClipMean = {static_cast<float>(0.48145466), static_cast<float>(0.4578275),
                                        static_cast<float>(0.40821073)};
const std::array<float, 3> kClipStd = {static_cast<float>(0.26862954), static_cast<float>(0.26130258),
                                       static_cast<float>(0.27577711)};

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;  // Pillow's PRECISION_BITS

SG_NO_FP_CONTRACT double bicubic_kernel(double x) {
  const double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Fixed-point weights for one axis: output i reads input samples
// first[i] .. first[i] + count[i] - 1 with weights k[i * ksize + j].
struct AxisCoeffs {
  int ksize = 0;
  std::vector<int> first, count;
  std::vector<int32_t> k;
};

SG_NO_FP_CONTRACT AxisCoeffs precompute_coeffs(int in_size, int out_size) {
  const double support_base = 2.0;  // bicubic
  double scale = static_cast<double>(in_size) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = support_base * filterscale;

  AxisCoeffs c;
  c.ksize = static_cast<int>(std::ceil(support)) * 2 + 1;
  c.first.resize(out_size);
  c.count.resize(out_size);
  c.k.assign(static_cast<size_t>(out_size) * c.ksize, 0);
  std::vector<double> w(c.ksize);
  for (int xx = 0; xx < out_size; ++xx) {
    double center = (xx + 0.5) * scale;
    double ss = 1.0 / filterscale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      double v = bicubic_kernel((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    int32_t* kout = &c.k[static_cast<size_t>(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      double scaled = v * static_cast<double>(1 << kPrecisionBits);
      kout[x] = v < 0 ? static_cast<int32_t>(-0.5 + scaled) : static_cast<int32_t>(0.5 + scaled);
    }
    c.first[xx] = xmin;
    c.count[xx] = xmax;
  }
  return c;
}

inline uint8_t clip8(int64_t acc) {
  int64_t v = acc >> kPrecisionBits;  // arithmetic shift (floor), like Pillow
  return static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
}

// Horizontal pass over source rows [row0, row0 + rows).
Image resample_horizontal(const Image& in, int out_w, int row0, int rows, const AxisCoeffs& c) {
  Image out;
  out.width = out_w;
  out.height = rows;
  out.rgb.resize(static_cast<size_t>(out_w) * rows * 3);
  const int64_t half = int64_t{1} << (kPrecisionBits - 1);
  for (int y = 0; y < rows; ++y) {
    const uint8_t* src = in.pixel(0, row0 + y);
    uint8_t* dst = out.pixel(0, y);
    for (int xx = 0; xx < out_w; ++xx) {
      const int32_t* k = &c.k[static_cast<size_t>(xx) * c.ksize];
      const uint8_t* s = src + static_cast<size_t>(c.first[xx]) * 3;
      int64_t r = half, g = half, b = half;
      for (int x = 0; x < c.count[xx]; ++x) {
        r += int64_t{s[3 * x + 0]} * k[x];
        g += int64_t{s[3 * x + 1]} * k[x];
        b += int64_t{s[3 * x + 2]} * k[x];
      }
      dst[3 * xx + 0] = clip8(r);
      dst[3 * xx + 1] = clip8(g);
      dst[3 * xx + 2] = clip8(b);
    }
  }
  return out;
}

// Vertical pass; c.first is relative to in's first row minus `row_shift`.
Image resample_vertical(const Image& in, int out_h, int row_shift, const AxisCoeffs& c) {
  Image out;
  out.width = in.width;
  out.height = out_h;
  out.rgb.resize(static_cast<size_t>(in.width) * out_h * 3);
  const int64_t half = int64_t{1} << (kPrecisionBits - 1);
  const size_t row_bytes = static_cast<size_t>(in.width) * 3;
  std::vector<int64_t> acc(row_bytes);
  for (int yy = 0; yy < out_h; ++yy) {
    const int32_t* k = &c.k[static_cast<size_t>(yy) * c.ksize];
    std::fill(acc.begin(), acc.end(), half);
    for (int y = 0; y < c.count[yy]; ++y) {
      const uint8_t* s = in.pixel(0, c.first[yy] - row_shift + y);
      const int64_t ky = k[y];
      for (size_t i = 0; i < row_bytes; ++i) acc[i] += int64_t{s[i]} * ky;
    }
    uint8_t* dst = out.pixel(0, yy);
    for (size_t i = 0; i < row_bytes; ++i) dst[i] = clip8(acc[i]);
  }
  return out;
}

}  // namespace

Image resize_bicubic(const Image& in, int out_w, int out_h) {
  if (in.width <= 0 || in.height <= 0 ||
      in.rgb.size() != static_cast<size_t>(in.width) * in.height * 3)
    throw Error("resize: empty or inconsistent image (" + std::to_string(in.width) + "x" +
                std::to_string(in.height) + ")");
  if (out_w <= 0 || out_h <= 0)
    throw Error("resize: bad output size " + std::to_string(out_w) + "x" + std::to_string(out_h));
  const bool need_h = out_w != in.width;
  const bool need_v = out_h != in.height;
  if (!need_h && !need_v) return in;

  AxisCoeffs cv = precompute_coeffs(in.height, out_h);
  // Rows of the source the vertical pass reads (Pillow only resamples those
  // horizontally; the result is the same as doing all rows).
  const int row_first = cv.first[0];
  const int row_last = cv.first[out_h - 1] + cv.count[out_h - 1];

  if (need_h) {
    AxisCoeffs ch = precompute_coeffs(in.width, out_w);
    if (!need_v) return resample_horizontal(in, out_w, 0, in.height, ch);
    Image tmp = resample_horizontal(in, out_w, row_first, row_last - row_first, ch);
    return resample_vertical(tmp, out_h, row_first, cv);
  }
  return resample_vertical(in, out_h, 0, cv);
}

std::vector<float> to_normalized_chw(const Image& img, const std::array<float, 3>& mean,
                                     const std::array<float, 3>& std) {
  const size_t plane = static_cast<size_t>(img.width) * img.height;
  if (img.rgb.size() != plane * 3) throw Error("normalize: inconsistent image buffer");
  std::vector<float> out(plane * 3);
  for (int c = 0; c < 3; ++c) {
    float* o = out.data() + c * plane;
    // One value per possible byte: every step a float32 operation, in
    // torchvision's order: x.float().div(255), then .sub_(mean).div_(std).
    float lut[256];
    for (int v = 0; v < 256; ++v) {
      float x = static_cast<float>(v) / 255.0f;
      x = x - mean[c];
      lut[v] = x / std[c];
    }
    for (size_t i = 0; i < plane; ++i) o[i] = lut[img.rgb[i * 3 + c]];
  }
  return out;
}

std::vector<float> preprocess_blip2(const Image& img, int size) {
  return to_normalized_chw(resize_bicubic(img, size, size), kClipMean, kClipStd);
}

}  // namespace sg
