#include "clinic/quality.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "clinic/pixels.h"

namespace sg::clinic {

const char* verdict_name(Verdict v) {
  switch (v) {
    case Verdict::Ok: return "ok";
    case Verdict::Warn: return "warn";
    case Verdict::Refuse: return "refuse";
  }
  return "?";
}

GrayImage to_gray(const Image& img, int short_side) {
  const Image s = short_side > 0 ? px::shrink_to(img, short_side, true) : img;
  GrayImage g;
  g.width = s.width;
  g.height = s.height;
  g.v.resize(static_cast<size_t>(s.width) * s.height);
  for (size_t i = 0; i < g.v.size(); ++i) g.v[i] = px::luma(s.rgb.data() + i * 3);
  return g;
}

double laplacian_variance(const GrayImage& g) {
  if (g.width < 3 || g.height < 3) return 0;
  double s = 0, s2 = 0, n = 0;
  for (int y = 1; y + 1 < g.height; ++y)
    for (int x = 1; x + 1 < g.width; ++x) {
      const double l = g.at(x - 1, y) + g.at(x + 1, y) + g.at(x, y - 1) + g.at(x, y + 1) - 4.0 * g.at(x, y);
      s += l;
      s2 += l * l;
      n += 1;
    }
  const double m = s / n;
  return std::max(0.0, s2 / n - m * m);
}

std::vector<std::string> QualityReport::advice(Language lang) const {
  std::vector<std::string> out;
  for (Verdict v : {Verdict::Refuse, Verdict::Warn})
    for (const auto& c : checks)
      if (c.verdict == v && !c.advice.get(lang).empty()) {
        const std::string& a = c.advice.get(lang);
        if (std::find(out.begin(), out.end(), a) == out.end()) out.push_back(a);
      }
  return out;
}

namespace {

std::string fmt(const char* f, double a, double b = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b);
  return buf;
}

QualityCheck check(const char* id, double value, const char* unit) {
  QualityCheck c;
  c.id = id;
  c.value = value;
  c.unit = unit;
  return c;
}

}  // namespace

QualityReport assess_quality(const Image& img, const QualityThresholds& t, const LesionMask* lesion_in) {
  QualityReport q;
  q.width = img.width;
  q.height = img.height;
  const int min_side = std::min(img.width, img.height);

  // Resolution.
  {
    QualityCheck c = check("resolution", min_side, "px");
    if (min_side < t.min_side_refuse) {
      c.verdict = Verdict::Refuse;
      c.problem = {fmt("The photo is too small (%.0f pixels on its shorter side; at least %.0f are needed).",
                       min_side, t.min_side_refuse),
                   fmt("写真が小さすぎます（短辺%.0fピクセル。%.0fピクセル以上が必要です）。", min_side,
                       t.min_side_refuse)};
      c.advice = {"Retake closer, at the camera's full resolution (do not send a thumbnail or a cropped preview).",
                  "もっと近づいて、カメラの最大解像度で撮り直してください（縮小画像やプレビューは使わないでください）。"};
    } else if (min_side < t.min_side_warn) {
      c.verdict = Verdict::Warn;
      c.problem = {fmt("The photo is small (%.0f pixels on its shorter side).", min_side),
                   fmt("写真が小さめです（短辺%.0fピクセル）。", min_side)};
      c.advice = {"If you can, retake closer at full resolution for more detail.",
                  "可能であれば、もっと近づいて最大解像度で撮り直してください。"};
    }
    q.checks.push_back(c);
  }

  // Exposure and contrast on the luma of the whole frame, except a
  // dermatoscope's black rim (near-black pixels connected to the border).
  const LesionMask own = lesion_in ? LesionMask{} : segment_lesion(img);
  const LesionMask& lesion = lesion_in ? *lesion_in : own;
  {
    const GrayImage g = to_gray(img, 128);
    double s = 0, s2 = 0, dark = 0, bright = 0;
    for (float v : g.v) {
      s += v;
      s2 += double(v) * v;
      dark += v <= 10.0f;
      bright += v >= 250.0f;
    }
    const double n = std::max<double>(1, g.v.size());
    q.mean_luma = s / n;
    q.luma_std = std::sqrt(std::max(0.0, s2 / n - q.mean_luma * q.mean_luma));
    q.clipped_dark = dark / n;
    q.clipped_bright = bright / n;
    // Sharpness, two ways that do not depend on exposure or contrast:
    // (1) the band ratio: Laplacian energy of the photo at 112 px over its
    // energy at 56 px (×100). Blur removes the fine band first, whatever the
    // subject, so the ratio separates sharp from blurred photos far better
    // than any absolute level (see docs/consultation.md for the numbers).
    // (2) the fine detail: Laplacian variance at 256 px scaled to a luma
    // standard deviation of 50; a very low value catches heavy blur, where
    // both bands are empty and their ratio means little.
    const double fine = laplacian_variance(to_gray(img, 112)), coarse = laplacian_variance(to_gray(img, 56));
    q.sharpness = coarse > 1e-6 ? 100.0 * fine / coarse : 0.0;
    q.fine_detail = q.luma_std > 1.0 ? laplacian_variance(g) * (50.0 * 50.0) / (q.luma_std * q.luma_std) : 0.0;
  }
  {
    QualityCheck c = check("exposure", q.mean_luma, "mean luma 0-255");
    const LocalText more_light = {"Use more light (daylight or a lamp, without flash glare) and retake.",
                                  "明るい場所（自然光や照明。フラッシュの反射は避ける）で撮り直してください。"};
    const LocalText less_light = {"Avoid direct flash or strong light on the skin; retake in even, softer light.",
                                  "フラッシュや強い光を直接当てず、均一でやわらかい光の下で撮り直してください。"};
    if (q.mean_luma < t.mean_luma_dark_refuse || q.clipped_dark > t.clipped_dark_refuse) {
      c.verdict = Verdict::Refuse;
      c.problem = {fmt("The photo is too dark (mean brightness %.0f of 255; %.0f%% of it is black).", q.mean_luma,
                       100 * q.clipped_dark),
                   fmt("写真が暗すぎます（平均の明るさ%.0f/255、%.0f%%が真っ黒）。", q.mean_luma, 100 * q.clipped_dark)};
      c.advice = more_light;
    } else if (q.mean_luma > t.mean_luma_bright_refuse || q.clipped_bright > t.clipped_bright_refuse) {
      c.verdict = Verdict::Refuse;
      c.problem = {fmt("The photo is overexposed (mean brightness %.0f of 255; %.0f%% of it is pure white).",
                       q.mean_luma, 100 * q.clipped_bright),
                   fmt("写真が明るすぎます（平均の明るさ%.0f/255、%.0f%%が白飛び）。", q.mean_luma,
                       100 * q.clipped_bright)};
      c.advice = less_light;
    } else if (q.mean_luma < t.mean_luma_dark_warn || q.clipped_dark > t.clipped_warn) {
      c.verdict = Verdict::Warn;
      c.problem = {fmt("The photo is rather dark (mean brightness %.0f of 255).", q.mean_luma),
                   fmt("写真がやや暗めです（平均の明るさ%.0f/255）。", q.mean_luma)};
      c.advice = more_light;
    } else if (q.clipped_bright > t.clipped_warn) {
      c.verdict = Verdict::Warn;
      c.problem = {fmt("Part of the photo is washed out (%.0f%% pure white).", 100 * q.clipped_bright),
                   fmt("写真の一部が白飛びしています（%.0f%%）。", 100 * q.clipped_bright)};
      c.advice = less_light;
    }
    q.checks.push_back(c);
  }
  const bool too_small = q.checks[0].verdict == Verdict::Refuse;
  const bool exposure_bad = q.checks[1].verdict == Verdict::Refuse;
  const LocalText not_judged_small = {"Cannot be judged on a photo this small.", "写真が小さすぎるため判定できません。"};
  const LocalText not_judged_exposure = {"Cannot be judged at this exposure.", "露出が不適切なため判定できません。"};
  const LocalText not_judged_flat = {"Cannot be judged on an almost uniform photo.", "写真がほぼ均一なため判定できません。"};
  auto skip = [&](QualityCheck& c, const LocalText& why) {
    c.judged = false;
    c.verdict = Verdict::Ok;
    c.problem = why;
    c.advice = {};
  };
  {
    QualityCheck c = check("contrast", q.luma_std, "luma std 0-255");
    if (exposure_bad) {
      skip(c, not_judged_exposure);
    } else if (q.luma_std < t.contrast_refuse) {
      c.verdict = Verdict::Refuse;
      c.problem = {"The photo is almost uniform: there is nothing to judge.",
                   "写真がほぼ均一で、判断できる内容が写っていません。"};
      c.advice = {"Retake with the lesion in the centre of the frame, in focus.",
                  "病変を画面の中央に入れ、ピントを合わせて撮り直してください。"};
    }
    q.checks.push_back(c);
  }
  {
    QualityCheck c = check("sharpness", q.sharpness, "fine/coarse detail ratio x100");
    const LocalText hold_still = {"Hold the camera still, let it focus on the lesion (tap the screen on it), and retake.",
                                  "カメラをしっかり固定し、病変にピントを合わせて（画面の病変をタップ）撮り直してください。"};
    // A uniform frame is judged by the contrast check, not here.
    if (too_small) {
      skip(c, not_judged_small);
    } else if (exposure_bad) {
      skip(c, not_judged_exposure);
    } else if (q.luma_std < t.contrast_refuse) {
      skip(c, not_judged_flat);
    } else {
      if (q.sharpness < t.sharpness_refuse || q.fine_detail < t.fine_detail_refuse) {
        c.verdict = Verdict::Refuse;
        c.problem = {fmt("The photo is blurred (sharpness %.0f; at least %.0f is needed).", q.sharpness,
                         t.sharpness_refuse),
                     fmt("写真がぼやけています（鮮明度%.0f。%.0f以上が必要です）。", q.sharpness, t.sharpness_refuse)};
        c.advice = hold_still;
      } else if (q.sharpness < t.sharpness_warn) {
        c.verdict = Verdict::Warn;
        c.problem = {fmt("The photo is slightly soft (sharpness %.0f).", q.sharpness),
                     fmt("写真がやや不鮮明です（鮮明度%.0f）。", q.sharpness)};
        c.advice = hold_still;
      }
    }
    q.checks.push_back(c);
  }
  {
    q.lesion_fraction = lesion.width > 0 ? double(lesion.area()) / (double(lesion.width) * lesion.height) : 0;
    const LesionFeatures f = lesion.width > 0 ? measure_lesion(img, lesion) : LesionFeatures{};
    q.lesion_border_touch = f.border_touch;
    QualityCheck c = check("lesion_in_frame", q.lesion_fraction, "fraction of the frame");
    const LocalText closer = {"Retake closer, with the lesion in the centre of the frame and some normal skin around it.",
                              "病変を画面の中央に置き、周りの正常な皮膚も少し入るように、もっと近づいて撮り直してください。"};
    // Only judged when the rest of the photo is usable: a tiny, dark or flat
    // photo already says why nothing was found.
    if (too_small) {
      skip(c, not_judged_small);
    } else if (exposure_bad) {
      skip(c, not_judged_exposure);
    } else if (q.luma_std < t.contrast_refuse) {
      skip(c, not_judged_flat);
    } else if (!lesion.found) {
      // Segmentation is a measurement, not ground truth: a faint lesion may
      // not be outlined, so this warns instead of refusing.
      c.verdict = Verdict::Warn;
      c.problem = {"No distinct lesion could be outlined in the photo (it may be faint, or not in the frame).",
                   "写真からはっきりした病変の輪郭を抽出できませんでした（病変が淡いか、写っていない可能性があります）。"};
      c.advice = closer;
    } else if (q.lesion_fraction < t.lesion_min_fraction_refuse) {
      c.verdict = Verdict::Refuse;
      c.problem = {fmt("The lesion is far too small in the frame to judge (%.2f%% of it).", 100 * q.lesion_fraction),
                   fmt("病変が画面に対して小さすぎて判断できません（%.2f%%）。", 100 * q.lesion_fraction)};
      c.advice = closer;
    } else if (q.lesion_fraction < t.lesion_min_fraction_warn) {
      c.verdict = Verdict::Warn;
      c.problem = {fmt("The lesion is small in the frame (%.1f%% of it).", 100 * q.lesion_fraction),
                   fmt("病変が画面に対して小さく写っています（%.1f%%）。", 100 * q.lesion_fraction)};
      c.advice = closer;
    } else if (q.lesion_border_touch > t.lesion_border_touch_warn) {
      c.verdict = Verdict::Warn;
      c.problem = {"The lesion reaches the edges of the photo; its outline may be cut off.",
                   "病変が写真の端にかかっており、輪郭が切れている可能性があります。"};
      c.advice = {"Step back a little so the whole lesion and some normal skin around it are in the frame.",
                  "少し離れて、病変全体と周囲の正常な皮膚が写るように撮り直してください。"};
    }
    q.checks.push_back(c);
  }
  for (const auto& c : q.checks) q.verdict = std::max(q.verdict, c.verdict);
  return q;
}

}  // namespace sg::clinic
