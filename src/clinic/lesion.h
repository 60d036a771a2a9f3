// What the project itself measures in a photo: the lesion's outline and
// ABCD-style features (asymmetry, border, colours, diameter). Deterministic
// and independent of the model: the same image always gives the same numbers
// and the same sentences (they are also used to write training texts).
//
// Segmentation: the image is resized to kWorkSize on its longer side (area
// averaging), a "darkness" channel is built (lesions are darker and more
// saturated than the surrounding skin), blurred, thresholded with Otsu's
// method; the largest 8-connected component that is not mostly on the frame
// border is kept, holes are filled and it is smoothed with one
// opening/closing. See docs/consultation.md.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "clinic/language.h"
#include "formats/image.h"

namespace sg::clinic {

constexpr int kLesionWorkSize = 256;  // longer side of the working resolution

struct LesionMask {
  int width = 0, height = 0;     // working resolution (aspect kept)
  std::vector<uint8_t> mask;     // 1 = lesion, row-major
  bool found = false;            // a plausible lesion region exists
  double threshold = 0;          // Otsu threshold on the darkness channel (0..255)
  double contrast = 0;           // mean darkness inside minus outside (0..255)
  int area() const;
  bool at(int x, int y) const { return mask[static_cast<size_t>(y) * width + x] != 0; }
};

LesionMask segment_lesion(const Image& img);
// For tests and callers that already have a mask (1 = lesion), e.g. a drawn shape.
LesionMask mask_from(int width, int height, std::vector<uint8_t> mask);

// Dermoscopy colours (the "C" of ABCD).
enum class SkinColour { White, Red, LightBrown, DarkBrown, BlueGray, Black };
constexpr int kSkinColourCount = 6;
const char* colour_id(SkinColour c);              // "white", "red", "light_brown", ...
const LocalText& colour_name(SkinColour c);       // "light brown" / "淡褐色"
// Classifies one RGB pixel into a dermoscopy colour, or -1 when it is none
// of them (e.g. skin-coloured / pink background). The rules assume neutral
// light with skin near RGB (225, 185, 170); measure_lesion white-balances on
// the photo's own skin first.
int classify_colour(uint8_t r, uint8_t g, uint8_t b);

// The dermoscopy colour of every lesion pixel at the mask's resolution
// (-1 = none of them, -2 = outside the lesion), judged after white balance on
// the surrounding skin (see measure_lesion).
struct ColourMap {
  std::vector<int8_t> colour;
  double skin_rgb[3] = {0, 0, 0};
};
ColourMap colour_map(const Image& img, const LesionMask& mask);

struct LesionFeatures {
  bool found = false;
  double area_fraction = 0;      // lesion pixels / frame pixels
  double diameter_fraction = 0;  // longest extent (Feret diameter) / the frame's shorter side (may exceed 1)
  double equivalent_diameter_fraction = 0;  // diameter of the circle of equal area / shorter side
  // Asymmetry: for each principal axis, the area of (mask XOR mask mirrored
  // across that axis through the centroid) / area. 0 = perfectly symmetric.
  double asymmetry[2] = {0, 0};
  int asymmetric_axes = 0;       // axes with asymmetry >= kAsymmetryAxisThreshold
  // Border: compactness = perimeter² / (4π·area); 1 for a disc, larger when ragged.
  double compactness = 0;
  bool irregular_border = false; // compactness >= kIrregularBorderThreshold
  // Colours: fraction of lesion pixels of each dermoscopy colour; a colour is
  // "present" when it covers >= kColourPresentFraction of the lesion.
  double colour_fraction[kSkinColourCount] = {0, 0, 0, 0, 0, 0};
  std::vector<SkinColour> colours;  // present colours, in enum order
  bool touches_border = false;   // the lesion reaches the frame's edge
  double border_touch = 0;       // fraction of the frame border covered by the lesion
  double mean_rgb[3] = {0, 0, 0};     // mean colour inside the lesion (as photographed)
  double skin_rgb[3] = {0, 0, 0};     // median colour of the surrounding skin (0 when none is visible)
};

constexpr double kAsymmetryAxisThreshold = 0.15;
constexpr double kIrregularBorderThreshold = 1.8;
constexpr double kColourPresentFraction = 0.05;

// Features of the segmented lesion; colours are read from `img` resized to
// the mask's size.
LesionFeatures measure_lesion(const Image& img, const LesionMask& mask);
LesionFeatures analyse_lesion(const Image& img);  // segment + measure

// "asymmetric in two axes, irregular border, 3 colours (light brown, dark
// brown, blue-gray), occupies 40% of the frame" / the Japanese equivalent.
std::string describe_features(const LesionFeatures& f, Language lang);

}  // namespace sg::clinic
