// Is the photo good enough to judge? Measured on the decoded image before the
// model runs: sharpness, exposure, resolution and whether the lesion is in the
// frame. A photo that fails is refused with concrete advice and no diagnosis
// (DESIGN.md §8). Thresholds are in QualityThresholds and documented in
// docs/consultation.md with how they were chosen.
#pragma once
#include <string>
#include <vector>

#include "clinic/language.h"
#include "clinic/lesion.h"
#include "formats/image.h"

namespace sg::clinic {

struct QualityThresholds {
  // Resolution: shorter side in pixels.
  int min_side_refuse = 112;       // below: refuse (the model's input is 224; half of it is too coarse)
  int min_side_warn = 224;         // below: warn
  // Sharpness: 100 × Laplacian variance of the gray photo shrunk to 112 px
  // on its shorter side / the same at 56 px (the fine band over the coarse
  // band; independent of exposure and contrast).
  double sharpness_refuse = 35.0;
  double sharpness_warn = 45.0;
  // And the fine detail alone: Laplacian variance at 256 px scaled to a luma
  // standard deviation of 50; below this the photo is refused as blurred
  // whatever the ratio (heavy blur empties both bands).
  double fine_detail_refuse = 10.0;
  // Exposure: mean luminance (0..255) and clipped fractions.
  double mean_luma_dark_refuse = 35.0;
  double mean_luma_dark_warn = 60.0;
  double mean_luma_bright_refuse = 235.0;
  double clipped_dark_refuse = 0.60;    // fraction of pixels with luma <= 10
  double clipped_bright_refuse = 0.50;  // fraction with luma >= 250
  double clipped_warn = 0.20;
  // Contrast: standard deviation of luma; a flat frame has nothing to judge.
  double contrast_refuse = 4.0;
  // Lesion in frame (from lesion.h's mask).
  // A lesion that is not found at all only warns (a faint lesion may not be
  // outlined); a found lesion this small is refused: retake closer.
  double lesion_min_fraction_refuse = 0.005;
  double lesion_min_fraction_warn = 0.03;
  double lesion_border_touch_warn = 0.30;      // fraction of the frame's border covered by the lesion
};

enum class Verdict { Ok, Warn, Refuse };
const char* verdict_name(Verdict v);  // "ok", "warn", "refuse"

// One measured check.
struct QualityCheck {
  std::string id;        // "resolution", "sharpness", "exposure", "contrast", "lesion_in_frame"
  double value = 0;      // the measurement (units in `unit`)
  std::string unit;
  Verdict verdict = Verdict::Ok;
  // false when another failed check makes this one meaningless (sharpness and
  // lesion of a tiny photo; contrast, sharpness and lesion of a black one):
  // verdict stays Ok and `problem` says why it was not judged.
  bool judged = true;
  LocalText problem;     // empty when ok: what is wrong, in words
  LocalText advice;      // empty when ok: what to do ("retake closer", "more light", "hold still")
};

struct QualityReport {
  Verdict verdict = Verdict::Ok;  // worst of the checks
  std::vector<QualityCheck> checks;
  int width = 0, height = 0;
  double sharpness = 0;            // fine/coarse band ratio ×100 (see thresholds)
  double fine_detail = 0;          // contrast-normalised Laplacian variance at 256 px
  double mean_luma = 0, luma_std = 0, clipped_dark = 0, clipped_bright = 0;
  double lesion_fraction = 0, lesion_border_touch = 0;
  bool refused() const { return verdict == Verdict::Refuse; }
  // The advice lines of every failing/warning check, refusals first.
  std::vector<std::string> advice(Language lang) const;
};

// Measures the photo. `lesion` is the segmentation of the same image (pass
// the result of segment_lesion); when null it is computed here.
QualityReport assess_quality(const Image& img, const QualityThresholds& t = {},
                             const LesionMask* lesion = nullptr);

// Building blocks, exposed for tests and tools.
// Gray (ITU-R BT.601 luma) image of `img` resized so its shorter side is
// `short_side` (box-filter area averaging; never upscales), row-major.
struct GrayImage {
  int width = 0, height = 0;
  std::vector<float> v;
  float at(int x, int y) const { return v[static_cast<size_t>(y) * width + x]; }
};
GrayImage to_gray(const Image& img, int short_side = 0);  // 0 = keep size
double laplacian_variance(const GrayImage& g);

}  // namespace sg::clinic
