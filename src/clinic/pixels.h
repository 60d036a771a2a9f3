// Small pixel operations shared by the photo-quality and lesion measurements
// (internal to src/clinic): area-averaging downscale, float planes, box blur.
#pragma once
#include <cstdint>
#include <vector>

#include "formats/image.h"

namespace sg::clinic::px {

// Area-averaging resize (each output pixel = mean of the source area it
// covers). Only shrinks: a target not smaller than the source returns a copy.
Image shrink_area(const Image& in, int out_w, int out_h);
// Shrinks so the longer (or shorter, when by_short) side is at most `side`,
// keeping the aspect ratio.
Image shrink_to(const Image& in, int side, bool by_short = false);

struct Plane {
  int w = 0, h = 0;
  std::vector<float> v;
  float& at(int x, int y) { return v[static_cast<size_t>(y) * w + x]; }
  float at(int x, int y) const { return v[static_cast<size_t>(y) * w + x]; }
};

// ITU-R BT.601 luma, 0..255.
inline float luma(const uint8_t* p) { return 0.299f * p[0] + 0.587f * p[1] + 0.114f * p[2]; }
Plane luma_plane(const Image& img);
// Separable box blur of radius r (window 2r+1), edges clamped.
Plane box_blur(const Plane& p, int r);

// Binary morphology on a 0/1 mask with a (2r+1)² square.
std::vector<uint8_t> erode(const std::vector<uint8_t>& m, int w, int h, int r);
std::vector<uint8_t> dilate(const std::vector<uint8_t>& m, int w, int h, int r);

}  // namespace sg::clinic::px
