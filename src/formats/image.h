// Image input: JPEG, PNG, WebP and HEIF/HEIC/AVIF decoded to 8-bit RGB with
// Debian's libraries (libjpeg-turbo, libpng, libwebp, libheif, libexif), and
// metadata-free re-encoding (JPEG, PNG) for storing patient photos.
//
// Decoding reproduces what SkinGPT-4's reference does, Pillow's
// Image.open(path).convert('RGB'): alpha is dropped (not composited), palettes
// and gray are expanded, 16-bit samples keep their high byte, JPEG is decoded
// with libjpeg-turbo's defaults (islow IDCT, fancy upsampling). The one
// deliberate default difference is EXIF orientation (Pillow ignores it); turn
// it off with DecodeOptions{.apply_orientation = false} for bit-exactness.
//
// Files are untrusted. The format is detected from magic bytes (never the
// extension); the dimensions are read and checked before any pixel buffer is
// allocated; truncated or corrupt files are refused. Every failure throws
// sg::Error with one line "<name>: <problem>".
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sg {

// 8-bit RGB, row-major HWC (rgb.size() == width * height * 3).
struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> rgb;

  uint8_t* pixel(int x, int y) { return rgb.data() + (static_cast<size_t>(y) * width + x) * 3; }
  const uint8_t* pixel(int x, int y) const {
    return rgb.data() + (static_cast<size_t>(y) * width + x) * 3;
  }
};

enum class ImageFormat { Unknown, Jpeg, Png, Webp, Heif };
const char* format_name(ImageFormat f);  // "JPEG", "PNG", "WebP", "HEIF", "unknown"

// Format from the first bytes (needs at most 16).
ImageFormat detect_image_format(const uint8_t* data, size_t size);

constexpr int64_t kMaxImagePixels = 50'000'000;  // 50 megapixels

struct DecodeOptions {
  // Rotate/flip upright: the EXIF Orientation tag for JPEG, PNG (eXIf) and WebP
  // (EXIF chunk); HEIF's own irot/imir/clap transforms for HEIF. Pillow's
  // Image.open().convert('RGB') applies none of these: use false to match it.
  bool apply_orientation = true;
  int64_t max_pixels = kMaxImagePixels;  // refuse larger images (after reading the header)
};

// Reads and decodes a file. Errors are "<path>: <problem>".
Image decode_image(const std::string& path, const DecodeOptions& opt = {});
// Decodes bytes already in memory; `name` is used in error messages.
Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name,
                          const DecodeOptions& opt = {});

// EXIF orientation (1..8) applied to an image; other values leave it unchanged.
Image apply_exif_orientation(const Image& img, int orientation);

// Re-encoding with no metadata at all (no EXIF, GPS, ICC, comments, text):
// a baseline JPEG with a plain JFIF header, or an 8-bit RGB PNG.
std::vector<uint8_t> encode_jpeg(const Image& img, int quality = 92);
std::vector<uint8_t> encode_png(const Image& img);

}  // namespace sg
