#include "clinic/lesion.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "clinic/pixels.h"

namespace sg::clinic {

int LesionMask::area() const { return static_cast<int>(std::count(mask.begin(), mask.end(), 1)); }

namespace {

constexpr float kVignetteLuma = 25.0f;     // near-black frame corners of dermatoscopes
constexpr double kMinAreaFraction = 0.002; // smaller regions are not a lesion
constexpr double kMinContrast = 8.0;       // darkness inside minus outside, 0..255
// Skin colour that colours are judged against (a light skin tone under
// neutral light); see measure_lesion.
constexpr double kReferenceSkin[3] = {225, 185, 170};

// How dark a pixel is: 255 − luma. Every dermoscopic lesion colour (browns,
// black, blue-gray, red) is darker than the skin around it.
inline float darkness(const uint8_t* p) { return 255.0f - px::luma(p); }

// Otsu's threshold over values 0..255 of the selected pixels.
double otsu(const std::vector<float>& v, const std::vector<uint8_t>& use) {
  std::array<double, 256> hist{};
  double n = 0;
  for (size_t i = 0; i < v.size(); ++i)
    if (use[i]) {
      hist[std::clamp(static_cast<int>(v[i]), 0, 255)] += 1;
      n += 1;
    }
  if (n == 0) return 255;
  double sum = 0;
  for (int i = 0; i < 256; ++i) sum += i * hist[i];
  double w0 = 0, s0 = 0, best = -1, thr = 0;
  for (int t = 0; t < 256; ++t) {
    w0 += hist[t];
    s0 += t * hist[t];
    if (w0 == 0 || w0 == n) continue;
    const double m0 = s0 / w0, m1 = (sum - s0) / (n - w0);
    const double between = w0 * (n - w0) * (m0 - m1) * (m0 - m1);
    if (between > best) {
      best = between;
      thr = t;
    }
  }
  return thr + 0.5;  // pixels with value > thr are "dark"
}

// 8-connected components of a 0/1 mask; returns labels (0 = background) and count.
int label_components(const std::vector<uint8_t>& m, int w, int h, std::vector<int>& label) {
  label.assign(m.size(), 0);
  int n = 0;
  std::vector<int> stack;
  for (int s = 0; s < w * h; ++s) {
    if (!m[s] || label[s]) continue;
    label[s] = ++n;
    stack.push_back(s);
    while (!stack.empty()) {
      const int p = stack.back();
      stack.pop_back();
      const int x = p % w, y = p / w;
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx) {
          const int xx = x + dx, yy = y + dy;
          if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
          const int q = yy * w + xx;
          if (m[q] && !label[q]) {
            label[q] = n;
            stack.push_back(q);
          }
        }
    }
  }
  return n;
}

// Marks (in `reached`) every pixel 4-connected to the frame's border through
// pixels for which accept(p) holds.
template <class Accept>
void flood_from_border(int w, int h, std::vector<uint8_t>& reached, Accept accept) {
  std::vector<int> stack;
  auto seed = [&](int x, int y) {
    const int p = y * w + x;
    if (!reached[p] && accept(p)) {
      reached[p] = 1;
      stack.push_back(p);
    }
  };
  for (int x = 0; x < w; ++x) seed(x, 0), seed(x, h - 1);
  for (int y = 0; y < h; ++y) seed(0, y), seed(w - 1, y);
  while (!stack.empty()) {
    const int p = stack.back();
    stack.pop_back();
    const int x = p % w, y = p / w;
    const int nb[4][2] = {{x - 1, y}, {x + 1, y}, {x, y - 1}, {x, y + 1}};
    for (auto& q : nb)
      if (q[0] >= 0 && q[1] >= 0 && q[0] < w && q[1] < h) seed(q[0], q[1]);
  }
}

// Pixels of `m` == 0 not 4-connected to the frame's border are holes: set them.
void fill_holes(std::vector<uint8_t>& m, int w, int h) {
  std::vector<uint8_t> outside(m.size(), 0);
  flood_from_border(w, h, outside, [&](int p) { return !m[p]; });
  for (size_t i = 0; i < m.size(); ++i)
    if (!m[i] && !outside[i]) m[i] = 1;
}

}  // namespace

LesionMask mask_from(int width, int height, std::vector<uint8_t> mask) {
  LesionMask m;
  m.width = width;
  m.height = height;
  m.mask = std::move(mask);
  for (auto& v : m.mask) v = v ? 1 : 0;
  m.found = m.area() > 0;
  return m;
}

LesionMask segment_lesion(const Image& full) {
  LesionMask out;
  if (full.width <= 0 || full.height <= 0) return out;
  const Image img = px::shrink_to(full, kLesionWorkSize);
  const int w = img.width, h = img.height;
  const size_t n = static_cast<size_t>(w) * h;
  out.width = w;
  out.height = h;
  out.mask.assign(n, 0);
  if (w < 8 || h < 8) return out;  // nothing to outline

  // The dermatoscope's black vignette: near-black pixels connected to the border.
  std::vector<uint8_t> vignette(n, 0);
  flood_from_border(w, h, vignette,
                    [&](int p) { return px::luma(img.rgb.data() + static_cast<size_t>(p) * 3) < kVignetteLuma; });
  std::vector<uint8_t> valid(n);
  size_t n_valid = 0;
  for (size_t i = 0; i < n; ++i) n_valid += (valid[i] = !vignette[i]);
  if (n_valid < n / 10) return out;  // (almost) all black

  px::Plane d;
  d.w = w;
  d.h = h;
  d.v.resize(n);
  for (size_t i = 0; i < n; ++i) d.v[i] = darkness(img.rgb.data() + i * 3);
  // Vignette pixels take the mean skin darkness so the blur does not pull the rim in.
  {
    double s = 0;
    for (size_t i = 0; i < n; ++i)
      if (valid[i]) s += d.v[i];
    const float fill = static_cast<float>(s / n_valid);
    for (size_t i = 0; i < n; ++i)
      if (!valid[i]) d.v[i] = fill;
  }
  const px::Plane sharp_d = d;  // unblurred, for growing the region exactly to its edge
  const int r = std::max(1, static_cast<int>(std::lround(std::max(w, h) * 0.01)));
  d = px::box_blur(px::box_blur(d, r), r);
  out.threshold = otsu(d.v, valid);

  std::vector<uint8_t> bin(n);
  for (size_t i = 0; i < n; ++i) bin[i] = valid[i] && d.v[i] > out.threshold;
  // Opening removes hairs and specks; closing joins a lesion's fragments.
  const int mr = std::max(1, std::max(w, h) / 128);
  bin = px::dilate(px::erode(bin, w, h, mr), w, h, mr);
  bin = px::erode(px::dilate(bin, w, h, mr), w, h, mr);

  std::vector<int> label;
  const int nc = label_components(bin, w, h, label);
  if (nc == 0) return out;
  // Pick the component with the best area × centrality.
  std::vector<double> area(nc + 1, 0), cx(nc + 1, 0), cy(nc + 1, 0);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const int l = label[static_cast<size_t>(y) * w + x];
      if (!l) continue;
      area[l] += 1;
      cx[l] += x;
      cy[l] += y;
    }
  const double half_diag = 0.5 * std::hypot(w, h);
  int best = 0;
  double best_score = -1;
  for (int l = 1; l <= nc; ++l) {
    const double dx = cx[l] / area[l] - 0.5 * (w - 1), dy = cy[l] / area[l] - 0.5 * (h - 1);
    const double dn = std::hypot(dx, dy) / half_diag;
    const double score = area[l] * std::exp(-2.0 * dn * dn);
    if (score > best_score) {
      best_score = score;
      best = l;
    }
  }
  for (size_t i = 0; i < n; ++i) out.mask[i] = label[i] == best;
  // Hysteresis: Otsu splits a many-coloured lesion at its darkest parts, so
  // grow the chosen region over connected pixels whose unblurred darkness is
  // above a lower threshold,
  // 60% of the way from the typical skin level to Otsu's.
  {
    std::vector<float> below;
    for (size_t i = 0; i < n; ++i)
      if (valid[i] && d.v[i] <= out.threshold) below.push_back(d.v[i]);
    if (!below.empty()) {
      auto mid = below.begin() + below.size() / 2;
      std::nth_element(below.begin(), mid, below.end());
      const float low = *mid + 0.6f * (static_cast<float>(out.threshold) - *mid);
      std::vector<int> stack;
      for (size_t i = 0; i < n; ++i)
        if (out.mask[i]) stack.push_back(static_cast<int>(i));
      while (!stack.empty()) {
        const int p = stack.back();
        stack.pop_back();
        const int x = p % w, y = p / w;
        for (int dy = -1; dy <= 1; ++dy)
          for (int dx = -1; dx <= 1; ++dx) {
            const int xx = x + dx, yy = y + dy;
            if (xx < 0 || yy < 0 || xx >= w || yy >= h) continue;
            const int q = yy * w + xx;
            if (!out.mask[q] && valid[q] && sharp_d.v[q] > low) {
              out.mask[q] = 1;
              stack.push_back(q);
            }
          }
      }
      // Open (drop hairs the growth followed) and close, as before.
      out.mask = px::dilate(px::erode(out.mask, w, h, mr), w, h, mr);
      out.mask = px::erode(px::dilate(out.mask, w, h, mr), w, h, mr);
    }
  }
  fill_holes(out.mask, w, h);
  // Smooth the outline (pixel noise is not border irregularity): blur the
  // mask and keep what is at least half lesion; the area barely changes.
  {
    px::Plane mp;
    mp.w = w;
    mp.h = h;
    mp.v.assign(out.mask.begin(), out.mask.end());
    mp = px::box_blur(px::box_blur(mp, r), r);
    for (size_t i = 0; i < n; ++i) out.mask[i] = mp.v[i] >= 0.5f;
    // Keep only the largest piece the smoothing may have left.
    std::vector<int> lab;
    const int k = label_components(out.mask, w, h, lab);
    if (k > 1) {
      std::vector<int> cnt(k + 1, 0);
      for (int l : lab) ++cnt[l];
      const int keep = static_cast<int>(std::max_element(cnt.begin() + 1, cnt.end()) - cnt.begin());
      for (size_t i = 0; i < n; ++i) out.mask[i] = lab[i] == keep;
    }
    fill_holes(out.mask, w, h);
  }

  double in = 0, ni = 0, o = 0, no = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!valid[i]) continue;
    if (out.mask[i]) in += d.v[i], ni += 1;
    else o += d.v[i], no += 1;
  }
  out.contrast = (ni > 0 && no > 0) ? in / ni - o / no : 0;
  const double frac = static_cast<double>(out.area()) / static_cast<double>(n);
  out.found = frac >= kMinAreaFraction && out.contrast >= kMinContrast;
  return out;
}

// ---------------------------------------------------------------- colours

const char* colour_id(SkinColour c) {
  static const char* ids[] = {"white", "red", "light_brown", "dark_brown", "blue_gray", "black"};
  return ids[static_cast<int>(c)];
}

const LocalText& colour_name(SkinColour c) {
  static const LocalText names[] = {{"white", "白色"},           {"red", "赤色"},
                                    {"light brown", "淡褐色"},   {"dark brown", "濃褐色"},
                                    {"blue-gray", "青灰色"},     {"black", "黒色"}};
  return names[static_cast<int>(c)];
}

int classify_colour(uint8_t r8, uint8_t g8, uint8_t b8) {
  const double r = r8 / 255.0, g = g8 / 255.0, b = b8 / 255.0;
  const double mx = std::max({r, g, b}), mn = std::min({r, g, b}), c = mx - mn;
  const double v = mx, s = mx > 0 ? c / mx : 0;
  double hue = 0;
  if (c > 0) {
    if (mx == r) hue = 60 * std::fmod((g - b) / c + 6, 6);
    else if (mx == g) hue = 60 * ((b - r) / c + 2);
    else hue = 60 * ((r - g) / c + 4);
  }
  if (v < 0.20) return static_cast<int>(SkinColour::Black);
  if (v >= 0.78 && s < 0.12) return static_cast<int>(SkinColour::White);
  // Red (vessels, erythema): bright, green far below red, blue not below
  // green (so not an orange-brown).
  if (v >= 0.50 && g < 0.45 * r && b >= 0.8 * g) return static_cast<int>(SkinColour::Red);
  // Blue-gray (including gray-violet): cool hues of low-to-moderate
  // saturation, or a desaturated mid-tone gray.
  if ((hue >= 180 && hue < 345 && s >= 0.06 && s < 0.50 && v < 0.85) || (s < 0.15 && v < 0.70))
    return static_cast<int>(SkinColour::BlueGray);
  // Browns: red-brown to yellow-brown hues.
  if (hue < 55 || hue >= 345) {
    if (v < 0.50 && s >= 0.20) return static_cast<int>(SkinColour::DarkBrown);
    if (v >= 0.50 && v < 0.90 && s >= 0.30) return static_cast<int>(SkinColour::LightBrown);
  }
  return -1;
}

// ---------------------------------------------------------------- features

namespace {

// Marching-squares contour length of a 0/1 mask (outside the frame = 0).
double perimeter(const LesionMask& m) {
  auto at = [&](int x, int y) -> int {
    return x >= 0 && y >= 0 && x < m.width && y < m.height && m.at(x, y) ? 1 : 0;
  };
  const double diag = std::sqrt(0.5);
  double len = 0;
  for (int y = -1; y < m.height; ++y)
    for (int x = -1; x < m.width; ++x) {
      const int a = at(x, y), b = at(x + 1, y), c = at(x + 1, y + 1), d = at(x, y + 1);
      const int k = a + b + c + d;
      if (k == 0 || k == 4) continue;
      if (k == 1 || k == 3) len += diag;
      else if ((a && c) || (b && d)) len += 2 * diag;  // saddle
      else len += 1.0;
    }
  return len;
}

struct Pt {
  double x, y;
};
double cross(const Pt& o, const Pt& a, const Pt& b) { return (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x); }

// Longest distance between two points of the lesion (pixel squares' corners).
double feret_diameter(const LesionMask& m) {
  std::vector<Pt> pts;
  for (int y = 0; y < m.height; ++y) {
    int first = -1, last = -1;
    for (int x = 0; x < m.width; ++x)
      if (m.at(x, y)) {
        if (first < 0) first = x;
        last = x;
      }
    if (first < 0) continue;
    pts.push_back({double(first), double(y)});
    pts.push_back({double(first), double(y + 1)});
    pts.push_back({double(last + 1), double(y)});
    pts.push_back({double(last + 1), double(y + 1)});
  }
  if (pts.size() < 2) return 0;
  std::sort(pts.begin(), pts.end(), [](const Pt& a, const Pt& b) { return a.x < b.x || (a.x == b.x && a.y < b.y); });
  std::vector<Pt> hull(2 * pts.size());
  size_t k = 0;
  for (size_t i = 0; i < pts.size(); ++i) {
    while (k >= 2 && cross(hull[k - 2], hull[k - 1], pts[i]) <= 0) --k;
    hull[k++] = pts[i];
  }
  for (size_t i = pts.size() - 1, t = k + 1; i > 0; --i) {
    while (k >= t && cross(hull[k - 2], hull[k - 1], pts[i - 1]) <= 0) --k;
    hull[k++] = pts[i - 1];
  }
  hull.resize(k > 1 ? k - 1 : k);
  double best = 0;
  for (size_t i = 0; i < hull.size(); ++i)
    for (size_t j = i + 1; j < hull.size(); ++j)
      best = std::max(best, std::hypot(hull[i].x - hull[j].x, hull[i].y - hull[j].y));
  return best;
}

}  // namespace

ColourMap colour_map(const Image& full, const LesionMask& m) {
  ColourMap cm;
  const int w = m.width, h = m.height;
  cm.colour.assign(static_cast<size_t>(w) * h, -2);
  if (w <= 0 || h <= 0) return cm;
  const Image img = (full.width == w && full.height == h) ? full : px::shrink_area(full, w, h);
  if (img.width != w || img.height != h) return cm;
  // The surrounding skin: per-channel median of pixels away from the lesion
  // (outside the mask dilated by 2% of the frame) and off the black rim.
  const std::vector<uint8_t> near = px::dilate(m.mask, w, h, std::max(1, std::max(w, h) / 50));
  std::array<std::vector<uint8_t>, 3> skin;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const uint8_t* p = img.pixel(x, y);
      if (near[static_cast<size_t>(y) * w + x] || px::luma(p) < kVignetteLuma) continue;
      for (int c = 0; c < 3; ++c) skin[c].push_back(p[c]);
    }
  // Colours are judged after white balance on the skin: gains that map the
  // skin to kReferenceSkin (clamped), so a colour cast of the camera or the
  // dermatoscope does not turn every brown into red (or gray into blue).
  double gain[3] = {1, 1, 1};
  for (int c = 0; c < 3; ++c) {
    if (skin[c].size() < 16) break;  // no skin visible: judge the raw colours
    auto mid = skin[c].begin() + skin[c].size() / 2;
    std::nth_element(skin[c].begin(), mid, skin[c].end());
    cm.skin_rgb[c] = *mid;
    gain[c] = std::clamp(kReferenceSkin[c] / std::max(1.0, cm.skin_rgb[c]), 0.5, 2.0);
  }
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      if (!m.at(x, y)) continue;
      const uint8_t* p = img.pixel(x, y);
      uint8_t q[3];
      for (int c = 0; c < 3; ++c) q[c] = static_cast<uint8_t>(std::clamp(std::lround(p[c] * gain[c]), 0L, 255L));
      cm.colour[static_cast<size_t>(y) * w + x] = static_cast<int8_t>(classify_colour(q[0], q[1], q[2]));
    }
  return cm;
}

LesionFeatures measure_lesion(const Image& full, const LesionMask& m) {
  LesionFeatures f;
  const int w = m.width, h = m.height;
  const int area = m.area();
  if (w <= 0 || h <= 0 || area == 0) return f;
  f.found = m.found;
  const double n = static_cast<double>(w) * h;
  f.area_fraction = area / n;
  const double short_side = std::min(w, h);
  f.equivalent_diameter_fraction = 2.0 * std::sqrt(area / M_PI) / short_side;
  f.diameter_fraction = feret_diameter(m) / short_side;

  // Centroid and principal axes.
  double sx = 0, sy = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if (m.at(x, y)) sx += x, sy += y;
  const double cx = sx / area, cy = sy / area;
  double sxx = 0, syy = 0, sxy = 0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if (m.at(x, y)) {
        sxx += (x - cx) * (x - cx);
        syy += (y - cy) * (y - cy);
        sxy += (x - cx) * (y - cy);
      }
  const double theta = 0.5 * std::atan2(2 * sxy, sxx - syy);  // major axis angle
  const double axes[2][2] = {{std::cos(theta), std::sin(theta)}, {-std::sin(theta), std::cos(theta)}};
  for (int a = 0; a < 2; ++a) {
    const double ux = axes[a][0], uy = axes[a][1];
    int miss = 0;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < w; ++x) {
        if (!m.at(x, y)) continue;
        // Reflect across the line through the centroid along u.
        const double px = x - cx, py = y - cy, t = px * ux + py * uy;
        const double rx = cx + 2 * t * ux - px, ry = cy + 2 * t * uy - py;
        const int ix = static_cast<int>(std::lround(rx)), iy = static_cast<int>(std::lround(ry));
        if (ix < 0 || iy < 0 || ix >= w || iy >= h || !m.at(ix, iy)) ++miss;
      }
    f.asymmetry[a] = static_cast<double>(miss) / area;
    if (f.asymmetry[a] >= kAsymmetryAxisThreshold) ++f.asymmetric_axes;
  }

  const double per = perimeter(m);
  f.compactness = per * per / (4 * M_PI * area);
  f.irregular_border = f.compactness >= kIrregularBorderThreshold;

  // Border contact.
  int border = 0, border_on = 0;
  for (int x = 0; x < w; ++x) border += 2, border_on += m.at(x, 0) + m.at(x, h - 1);
  for (int y = 1; y + 1 < h; ++y) border += 2, border_on += m.at(0, y) + m.at(w - 1, y);
  f.border_touch = border ? static_cast<double>(border_on) / border : 0;
  f.touches_border = border_on > 0;

  // Colours at the mask's resolution.
  const Image img = (full.width == w && full.height == h) ? full : px::shrink_area(full, w, h);
  if (img.width != w || img.height != h) return f;  // mask not made from this image
  double in[3] = {0, 0, 0};
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      if (m.at(x, y))
        for (int c = 0; c < 3; ++c) in[c] += img.pixel(x, y)[c];
  for (int c = 0; c < 3; ++c) f.mean_rgb[c] = in[c] / area;
  const ColourMap cm = colour_map(img, m);
  for (int c = 0; c < 3; ++c) f.skin_rgb[c] = cm.skin_rgb[c];
  int counts[kSkinColourCount] = {0, 0, 0, 0, 0, 0};
  for (int8_t k : cm.colour)
    if (k >= 0) ++counts[k];
  for (int k = 0; k < kSkinColourCount; ++k) {
    f.colour_fraction[k] = static_cast<double>(counts[k]) / area;
    if (f.colour_fraction[k] >= kColourPresentFraction) f.colours.push_back(static_cast<SkinColour>(k));
  }
  return f;
}

LesionFeatures analyse_lesion(const Image& img) { return measure_lesion(img, segment_lesion(img)); }

std::string describe_features(const LesionFeatures& f, Language lang) {
  const bool ja = lang == Language::Ja;
  if (!f.found)
    return ja ? "はっきりした病変の輪郭を画像から抽出できませんでした"
              : "no distinct lesion could be outlined in the photo";
  std::string s;
  auto add = [&](const std::string& part) {
    if (!s.empty()) s += ja ? "、" : ", ";
    s += part;
  };
  if (ja) {
    add(f.asymmetric_axes == 0 ? "左右対称" : f.asymmetric_axes == 1 ? "1軸で非対称" : "2軸で非対称");
    add(f.irregular_border ? "境界不整" : "境界は整");
  } else {
    add(f.asymmetric_axes == 0 ? "symmetric" : f.asymmetric_axes == 1 ? "asymmetric in one axis"
                                                                      : "asymmetric in two axes");
    add(f.irregular_border ? "irregular border" : "regular border");
  }
  std::string list;
  for (size_t i = 0; i < f.colours.size(); ++i)
    list += (i ? (ja ? "、" : ", ") : "") + colour_name(f.colours[i]).get(lang);
  const size_t nc = f.colours.size();
  if (ja) {
    add(nc == 0 ? "典型的なダーモスコピー色なし" : std::to_string(nc) + "色（" + list + "）");
  } else {
    add(nc == 0 ? "no typical dermoscopic colour"
                : std::to_string(nc) + (nc == 1 ? " colour (" : " colours (") + list + ")");
  }
  char pct[32];
  const double p = 100 * f.area_fraction;
  if (p < 1) std::snprintf(pct, sizeof pct, "%s", "<1%");
  else std::snprintf(pct, sizeof pct, "%.0f%%", p);
  add(ja ? std::string("画像の") + pct + "を占める" : std::string("occupies ") + pct + " of the frame");
  if (f.touches_border) add(ja ? "画像の端にかかっている" : "reaches the edge of the photo");
  return s;
}

}  // namespace sg::clinic
