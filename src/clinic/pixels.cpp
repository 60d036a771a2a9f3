#include "clinic/pixels.h"

#include <algorithm>
#include <cmath>

namespace sg::clinic::px {

namespace {
// Weights of source pixels for each output pixel along one axis (area averaging).
struct Taps {
  std::vector<int> first;
  std::vector<std::vector<float>> w;
};
Taps area_taps(int in, int out) {
  Taps t;
  const double scale = static_cast<double>(in) / out;
  for (int o = 0; o < out; ++o) {
    const double a = o * scale, b = (o + 1) * scale;
    const int i0 = static_cast<int>(std::floor(a)), i1 = std::min(in, static_cast<int>(std::ceil(b)));
    std::vector<float> w;
    for (int i = i0; i < i1; ++i) w.push_back(static_cast<float>((std::min<double>(b, i + 1) - std::max<double>(a, i)) / scale));
    t.first.push_back(i0);
    t.w.push_back(std::move(w));
  }
  return t;
}
}  // namespace

Image shrink_area(const Image& in, int out_w, int out_h) {
  if (out_w >= in.width && out_h >= in.height) return in;
  out_w = std::clamp(out_w, 1, in.width);
  out_h = std::clamp(out_h, 1, in.height);
  const Taps tx = area_taps(in.width, out_w), ty = area_taps(in.height, out_h);
  std::vector<float> mid(static_cast<size_t>(in.height) * out_w * 3);
  for (int y = 0; y < in.height; ++y)
    for (int x = 0; x < out_w; ++x) {
      float acc[3] = {0, 0, 0};
      for (size_t k = 0; k < tx.w[x].size(); ++k) {
        const uint8_t* p = in.pixel(tx.first[x] + static_cast<int>(k), y);
        for (int c = 0; c < 3; ++c) acc[c] += tx.w[x][k] * p[c];
      }
      for (int c = 0; c < 3; ++c) mid[(static_cast<size_t>(y) * out_w + x) * 3 + c] = acc[c];
    }
  Image out;
  out.width = out_w;
  out.height = out_h;
  out.rgb.resize(static_cast<size_t>(out_w) * out_h * 3);
  for (int y = 0; y < out_h; ++y)
    for (int x = 0; x < out_w; ++x) {
      float acc[3] = {0, 0, 0};
      for (size_t k = 0; k < ty.w[y].size(); ++k) {
        const float* p = &mid[((static_cast<size_t>(ty.first[y]) + k) * out_w + x) * 3];
        for (int c = 0; c < 3; ++c) acc[c] += ty.w[y][k] * p[c];
      }
      for (int c = 0; c < 3; ++c)
        out.pixel(x, y)[c] = static_cast<uint8_t>(std::clamp(std::lround(acc[c]), 0L, 255L));
    }
  return out;
}

Image shrink_to(const Image& in, int side, bool by_short) {
  const int ref = by_short ? std::min(in.width, in.height) : std::max(in.width, in.height);
  if (ref <= side) return in;
  const double s = static_cast<double>(side) / ref;
  return shrink_area(in, std::max(1, static_cast<int>(std::lround(in.width * s))),
                     std::max(1, static_cast<int>(std::lround(in.height * s))));
}

Plane luma_plane(const Image& img) {
  Plane p;
  p.w = img.width;
  p.h = img.height;
  p.v.resize(static_cast<size_t>(p.w) * p.h);
  for (size_t i = 0; i < p.v.size(); ++i) p.v[i] = luma(img.rgb.data() + i * 3);
  return p;
}

Plane box_blur(const Plane& p, int r) {
  if (r <= 0 || p.v.empty()) return p;
  Plane t = p, o = p;
  const float n = 2.0f * r + 1;
  for (int y = 0; y < p.h; ++y)
    for (int x = 0; x < p.w; ++x) {
      float s = 0;
      for (int k = -r; k <= r; ++k) s += p.at(std::clamp(x + k, 0, p.w - 1), y);
      t.at(x, y) = s / n;
    }
  for (int y = 0; y < p.h; ++y)
    for (int x = 0; x < p.w; ++x) {
      float s = 0;
      for (int k = -r; k <= r; ++k) s += t.at(x, std::clamp(y + k, 0, p.h - 1));
      o.at(x, y) = s / n;
    }
  return o;
}

namespace {
std::vector<uint8_t> morph(const std::vector<uint8_t>& m, int w, int h, int r, bool dil) {
  if (r <= 0) return m;
  // Outside the frame counts as background for dilation and as foreground for
  // erosion, so a lesion cut by the frame keeps its edge.
  std::vector<uint8_t> t(m.size()), o(m.size());
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t v = dil ? 0 : 1;
      for (int k = -r; k <= r; ++k) {
        const int xx = x + k;
        if (xx < 0 || xx >= w) continue;
        const uint8_t s = m[static_cast<size_t>(y) * w + xx];
        v = dil ? (v | s) : (v & s);
      }
      t[static_cast<size_t>(y) * w + x] = v;
    }
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t v = dil ? 0 : 1;
      for (int k = -r; k <= r; ++k) {
        const int yy = y + k;
        if (yy < 0 || yy >= h) continue;
        const uint8_t s = t[static_cast<size_t>(yy) * w + x];
        v = dil ? (v | s) : (v & s);
      }
      o[static_cast<size_t>(y) * w + x] = v;
    }
  return o;
}
}  // namespace

std::vector<uint8_t> erode(const std::vector<uint8_t>& m, int w, int h, int r) { return morph(m, w, h, r, false); }
std::vector<uint8_t> dilate(const std::vector<uint8_t>& m, int w, int h, int r) { return morph(m, w, h, r, true); }

}  // namespace sg::clinic::px
