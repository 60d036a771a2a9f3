// Image preprocessing exactly as SkinGPT-4 / BLIP-2's Blip2ImageEvalProcessor:
//   transforms.Resize((S, S), BICUBIC)   -> Pillow 9.4 Image.resize on uint8 RGB
//   transforms.ToTensor()                 -> float32(x) / 255
//   transforms.Normalize(mean, std)       -> (x - mean) / std in float32
// The resize re-implements Pillow's libImaging/Resample.c (separable, horizontal
// pass first, bicubic a = -0.5 with the support widened by the downscale
// factor, 22-bit fixed-point weights, round + clip to uint8 after each pass),
// so the output is bit-identical to Pillow's; see docs/image-input.md.
#pragma once
#include <array>
#include <vector>

#include "formats/image.h"

namespace sg {

// CLIP / BLIP-2 normalisation constants (as float32, like torch.as_tensor).
extern const std::array<float, 3> kClipMean;
extern const std::array<float, 3> kClipStd;

// Pillow Image.resize((out_w, out_h), Image.BICUBIC) for an RGB uint8 image.
// Squashes (no aspect preservation, no crop). Throws sg::Error on empty
// input or non-positive output size.
Image resize_bicubic(const Image& in, int out_w, int out_h);

// ToTensor + Normalize: HWC uint8 -> CHW float32, (x/255 - mean[c]) / std[c],
// every step rounded to float32 exactly as torchvision does.
std::vector<float> to_normalized_chw(const Image& img, const std::array<float, 3>& mean,
                                     const std::array<float, 3>& std);

// The whole Blip2ImageEvalProcessor: resize to size x size, normalise with the
// CLIP constants. Returns CHW float32 [3, size, size].
std::vector<float> preprocess_blip2(const Image& img, int size = 224);

}  // namespace sg
