// Image input and preprocessing: bit-exactness against the reference
// (Pillow 9.4 decode + resize, torchvision normalise), every supported format
// and pixel layout, EXIF/HEIF orientation, metadata-free encoding, and hostile
// inputs (truncated, empty, not an image, 0x0, gigantic headers, fuzzed bytes)
// which must give one sg::Error line naming the file, never a crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

// clang-format off
#include <cstdio>
#include <jpeglib.h>
// clang-format on
#include <libheif/heif.h>
#include <png.h>
#include <webp/encode.h>

#include "core/error.h"
#include "formats/image.h"
#include "formats/preprocess.h"
#include "test_util.h"

namespace fs = std::filesystem;
using sg::DecodeOptions;
using sg::Image;

namespace {

using Bytes = std::vector<uint8_t>;

const DecodeOptions kExact{.apply_orientation = false};

Bytes to_bytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

void write_file(const fs::path& p, const Bytes& b) {
  std::ofstream f(p, std::ios::binary);
  f.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  ASSERT_TRUE(f.good()) << p;
}

Image decode(const Bytes& b, const DecodeOptions& o = {}) {
  return sg::decode_image_memory(b.data(), b.size(), "mem", o);
}

// A smooth test picture with some structure (lossy codecs keep it well).
Image make_image(int w, int h, int seed = 0) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      uint8_t* p = img.pixel(x, y);
      p[0] = static_cast<uint8_t>((x * 255) / std::max(1, w - 1));
      p[1] = static_cast<uint8_t>((y * 255) / std::max(1, h - 1));
      p[2] = static_cast<uint8_t>(128 + 100 * std::sin((x + y + seed) * 0.15));
    }
  return img;
}

// Noise picture: exact codecs and resize checks.
Image make_noise(int w, int h, unsigned seed) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  std::mt19937 rng(seed);
  for (auto& v : img.rgb) v = static_cast<uint8_t>(rng());
  return img;
}

double mean_abs_diff(const Image& a, const Image& b) {
  if (a.width != b.width || a.height != b.height) return 1e9;
  double s = 0;
  for (size_t i = 0; i < a.rgb.size(); ++i) s += std::abs(int(a.rgb[i]) - int(b.rgb[i]));
  return s / a.rgb.size();
}

// Mean colour of a rectangle.
std::array<double, 3> mean_rgb(const Image& img, int x0, int y0, int x1, int y1) {
  std::array<double, 3> m{0, 0, 0};
  for (int y = y0; y < y1; ++y)
    for (int x = x0; x < x1; ++x)
      for (int c = 0; c < 3; ++c) m[c] += img.pixel(x, y)[c];
  for (auto& v : m) v /= double(x1 - x0) * (y1 - y0);
  return m;
}

// Expect an sg::Error whose message is one line "<name>: ..." containing `needle`.
template <typename F>
void expect_error(F&& f, const std::string& name, const std::string& needle = "") {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const sg::Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m.rfind(name + ": ", 0), 0u) << m;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    if (!needle.empty()) {
      EXPECT_NE(m.find(needle), std::string::npos) << m;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "wrong exception type: " << e.what();
  }
}

void expect_mem_error(const Bytes& b, const std::string& needle = "", const DecodeOptions& o = {}) {
  expect_error([&] { decode(b, o); }, "mem", needle);
}

// ------------------------------------------------------------ byte tools ----

uint32_t crc32(const uint8_t* p, size_t n, uint32_t crc = 0) {
  crc = ~crc;
  for (size_t i = 0; i < n; ++i) {
    crc ^= p[i];
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

void put_be32(Bytes& b, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
}

void png_chunk(Bytes& out, const char* type, const Bytes& data) {
  put_be32(out, static_cast<uint32_t>(data.size()));
  Bytes td(type, type + 4);
  td.insert(td.end(), data.begin(), data.end());
  out.insert(out.end(), td.begin(), td.end());
  put_be32(out, crc32(td.data(), td.size()));
}

// A PNG that is just a signature and an IHDR (plus optional tail chunks).
Bytes png_header_only(uint32_t w, uint32_t h, bool with_iend) {
  Bytes out = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  Bytes ihdr;
  put_be32(ihdr, w);
  put_be32(ihdr, h);
  ihdr.insert(ihdr.end(), {8, 2, 0, 0, 0});  // 8-bit RGB
  png_chunk(out, "IHDR", ihdr);
  if (with_iend) png_chunk(out, "IEND", {});
  return out;
}

// Chunk types of a PNG, in order.
std::vector<std::string> png_chunk_types(const Bytes& b) {
  std::vector<std::string> t;
  size_t p = 8;
  while (p + 12 <= b.size()) {
    uint32_t len = (b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3];
    t.emplace_back(reinterpret_cast<const char*>(&b[p + 4]), 4);
    p += 12 + len;
  }
  return t;
}

// JPEG markers up to (and including) SOS; offset of each marker's 0xFF.
struct Marker {
  uint8_t code;
  size_t pos;
};
std::vector<Marker> jpeg_markers(const Bytes& b) {
  std::vector<Marker> m;
  size_t p = 2;
  while (p + 4 <= b.size() && b[p] == 0xFF) {
    uint8_t code = b[p + 1];
    m.push_back({code, p});
    if (code == 0xDA) break;
    p += 2 + ((b[p + 2] << 8) | b[p + 3]);
  }
  return m;
}

// Big-endian EXIF APP1 payload with a single IFD0 entry, Orientation = o.
Bytes exif_orientation_block(int o, bool with_prefix) {
  Bytes e;
  if (with_prefix) e = {'E', 'x', 'i', 'f', 0, 0};
  e.insert(e.end(), {'M', 'M', 0, 0x2A, 0, 0, 0, 8,  // TIFF header, IFD0 at 8
                     0, 1,                           // one entry
                     0x01, 0x12, 0, 3, 0, 0, 0, 1,   // Orientation, SHORT, count 1
                     0, static_cast<uint8_t>(o), 0, 0, 0, 0, 0, 0});  // value; next IFD 0
  return e;
}

Bytes insert_app1(const Bytes& jpeg, const Bytes& payload) {
  Bytes out(jpeg.begin(), jpeg.begin() + 2);
  const size_t len = payload.size() + 2;
  out.insert(out.end(), {0xFF, 0xE1, static_cast<uint8_t>(len >> 8), static_cast<uint8_t>(len)});
  out.insert(out.end(), payload.begin(), payload.end());
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

// ------------------------------------------------- libpng / libjpeg writers ----

struct PngSpec {
  int w = 0, h = 0, color_type = PNG_COLOR_TYPE_RGB, bit_depth = 8;
  bool interlace = false;
  std::vector<Bytes> rows;  // packed, big-endian samples as PNG stores them
  std::vector<png_color> palette;
  Bytes trns;
  Bytes exif;  // eXIf payload (TIFF block)
};

void png_vec_write(png_structp png, png_bytep d, size_t n) {
  auto* v = static_cast<Bytes*>(png_get_io_ptr(png));
  v->insert(v->end(), d, d + n);
}

Bytes write_png(const PngSpec& s) {
  Bytes out;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png_create_info_struct(png);
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return {};
  }
  png_set_write_fn(png, &out, png_vec_write, nullptr);
  png_set_IHDR(png, info, s.w, s.h, s.bit_depth, s.color_type,
               s.interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
               PNG_FILTER_TYPE_DEFAULT);
  if (!s.palette.empty()) png_set_PLTE(png, info, s.palette.data(), static_cast<int>(s.palette.size()));
  if (!s.trns.empty()) png_set_tRNS(png, info, s.trns.data(), static_cast<int>(s.trns.size()), nullptr);
  if (!s.exif.empty()) png_set_eXIf_1(png, info, static_cast<png_uint_32>(s.exif.size()),
                                      const_cast<png_bytep>(s.exif.data()));
  png_write_info(png, info);
  std::vector<png_bytep> rows;
  for (auto& r : s.rows) rows.push_back(const_cast<png_bytep>(r.data()));
  png_write_image(png, rows.data());
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return out;
}

// libjpeg encoder for test inputs the production encoder does not make
// (progressive, grayscale, 4:2:0). Inputs are valid, so libjpeg's default
// error handler is never reached.
Bytes write_jpeg(const Image& img, int quality, bool progressive, bool gray) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = img.width;
  c.image_height = img.height;
  c.input_components = gray ? 1 : 3;
  c.in_color_space = gray ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, quality, TRUE);
  if (progressive) jpeg_simple_progression(&c);
  jpeg_start_compress(&c, TRUE);
  Bytes row(img.width * 3);
  while (c.next_scanline < c.image_height) {
    const uint8_t* src = img.pixel(0, c.next_scanline);
    if (gray)
      for (int x = 0; x < img.width; ++x) row[x] = src[3 * x + 1];
    else
      std::memcpy(row.data(), src, row.size());
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  Bytes out(buf, buf + size);
  free(buf);
  return out;
}

// A 16x8 CMYK JPEG (Adobe marker, as Photoshop writes it): left 8x8 block one
// raw CMYK value, right block another. Quality 100 keeps flat blocks exact.
Bytes write_jpeg_cmyk(const std::array<uint8_t, 4>& left, const std::array<uint8_t, 4>& right) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = 16;
  c.image_height = 8;
  c.input_components = 4;
  c.in_color_space = JCS_CMYK;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, 100, TRUE);
  jpeg_start_compress(&c, TRUE);
  Bytes row;
  for (int x = 0; x < 16; ++x) row.insert(row.end(), (x < 8 ? left : right).begin(), (x < 8 ? left : right).end());
  while (c.next_scanline < c.image_height) {
    JSAMPROW r = row.data();
    jpeg_write_scanlines(&c, &r, 1);
  }
  jpeg_finish_compress(&c);
  jpeg_destroy_compress(&c);
  Bytes out(buf, buf + size);
  free(buf);
  return out;
}

heif_error heif_vec_write(heif_context*, const void* data, size_t size, void* user) {
  auto* v = static_cast<Bytes*>(user);
  v->insert(v->end(), static_cast<const uint8_t*>(data), static_cast<const uint8_t*>(data) + size);
  return heif_error{heif_error_Ok, heif_suberror_Unspecified, "ok"};
}

// HEIC via libheif + x265; empty when no HEVC encoder is available.
Bytes write_heic(const Image& src, int quality, heif_orientation orientation = heif_orientation_normal) {
  heif_context* ctx = heif_context_alloc();
  heif_encoder* enc = nullptr;
  if (heif_context_get_encoder_for_format(ctx, heif_compression_HEVC, &enc).code != heif_error_Ok) {
    heif_context_free(ctx);
    return {};
  }
  heif_encoder_set_lossy_quality(enc, quality);
  heif_image* img = nullptr;
  heif_image_create(src.width, src.height, heif_colorspace_RGB, heif_chroma_interleaved_RGB, &img);
  heif_image_add_plane(img, heif_channel_interleaved, src.width, src.height, 8);
  int stride = 0;
  uint8_t* p = heif_image_get_plane(img, heif_channel_interleaved, &stride);
  for (int y = 0; y < src.height; ++y) std::memcpy(p + y * stride, src.pixel(0, y), src.width * 3);
  heif_encoding_options* opt = heif_encoding_options_alloc();
  opt->image_orientation = orientation;
  Bytes out;
  if (heif_context_encode_image(ctx, img, enc, opt, nullptr).code == heif_error_Ok) {
    heif_writer w{1, heif_vec_write};
    if (heif_context_write(ctx, &w, &out).code != heif_error_Ok) out.clear();
  }
  heif_encoding_options_free(opt);
  heif_image_release(img);
  heif_encoder_release(enc);
  heif_context_free(ctx);
  return out;
}

Image image_from_i64(const std::vector<int64_t>& v, int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  for (int64_t x : v) img.rgb.push_back(static_cast<uint8_t>(x));
  return img;
}

size_t count_diff(const std::vector<float>& a, const std::vector<float>& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

}  // namespace

// ============================================================ preprocess ====

TEST(ImagePreprocess, Reference32x32BitExact) {
  const fs::path t = sg::test::ref_dir() / "tensors";
  Image raw = image_from_i64(sg::test::read_i64(t / "raw_image_hwc_uint8.bin"), 45, 37);
  ASSERT_EQ(raw.rgb.size(), 37u * 45 * 3);
  Image r = sg::resize_bicubic(raw, 32, 32);
  const auto want = sg::test::read_i64(t / "resized_image_hwc_uint8.bin");
  ASSERT_EQ(r.rgb.size(), want.size());
  size_t bad = 0;
  for (size_t i = 0; i < want.size(); ++i) bad += r.rgb[i] != want[i];
  EXPECT_EQ(bad, 0u) << "resized pixels differing from Pillow";

  const auto x = sg::to_normalized_chw(r, sg::kClipMean, sg::kClipStd);
  const auto ref = sg::test::read_f32(t / "image.bin");
  ASSERT_EQ(x.size(), ref.size());
  EXPECT_LE(sg::test::max_abs_diff(x, ref), 1e-6f);
  EXPECT_EQ(count_diff(x, ref), 0u) << "normalised values not bit-identical to torchvision";
  EXPECT_EQ(sg::preprocess_blip2(raw, 32), x);
}

struct Ref224 {
  const char* tag;
  const char* file;
  int w, h;
};

void PrintTo(const Ref224& r, std::ostream* os) { *os << r.file; }

class ImageRef224 : public ::testing::TestWithParam<Ref224> {};

TEST_P(ImageRef224, DecodeResizeNormalizeBitExact) {
  const Ref224 c = GetParam();
  const fs::path R = sg::test::ref_dir();
  const std::string base = std::string("tensors/pre224.") + c.tag;
  Image img = sg::decode_image((R / "images" / c.file).string(), kExact);
  ASSERT_EQ(img.width, c.w);
  ASSERT_EQ(img.height, c.h);
  const auto dec = sg::test::read_raw<uint8_t>(R / (base + ".decoded_hwc_uint8.bin"));
  ASSERT_EQ(img.rgb.size(), dec.size());
  size_t bad = 0;
  int maxd = 0;
  for (size_t i = 0; i < dec.size(); ++i) {
    bad += img.rgb[i] != dec[i];
    maxd = std::max(maxd, std::abs(int(img.rgb[i]) - int(dec[i])));
  }
  EXPECT_EQ(bad, 0u) << "decoded bytes differ from Pillow (max diff " << maxd << ")";

  // Resize and normalise from the reference's own decoded pixels, so a decode
  // difference cannot hide a resize difference (and vice versa).
  Image ref_dec;
  ref_dec.width = c.w;
  ref_dec.height = c.h;
  ref_dec.rgb = dec;
  Image r = sg::resize_bicubic(ref_dec, 224, 224);
  const auto res = sg::test::read_raw<uint8_t>(R / (base + ".resized224_hwc_uint8.bin"));
  ASSERT_EQ(r.rgb.size(), res.size());
  bad = 0;
  for (size_t i = 0; i < res.size(); ++i) bad += r.rgb[i] != res[i];
  EXPECT_EQ(bad, 0u) << "resized bytes differ from Pillow";

  const auto x = sg::to_normalized_chw(r, sg::kClipMean, sg::kClipStd);
  const auto ref = sg::test::read_f32(R / (base + ".processed_chw_f32.bin"));
  ASSERT_EQ(x.size(), ref.size());
  EXPECT_LE(sg::test::max_abs_diff(x, ref), 1e-6f);
  EXPECT_EQ(count_diff(x, ref), 0u);

  // End to end from the file.
  EXPECT_EQ(sg::preprocess_blip2(img, 224), ref);
}

INSTANTIATE_TEST_SUITE_P(Reference, ImageRef224,
                         ::testing::Values(Ref224{"isic2017_melanoma_ISIC_0012395",
                                                  "isic2017_melanoma_ISIC_0012395.jpg", 256, 256},
                                           Ref224{"synthetic_500x375", "synthetic_500x375.png", 500, 375}),
                         [](const auto& i) { return std::string(i.param.tag).substr(0, 9); });

// A constant picture stays exactly constant whatever the scale (weights of
// each output sum to one in fixed point).
TEST(ImagePreprocess, ConstantImageStaysConstant) {
  for (auto [w, h, ow, oh] : {std::array<int, 4>{37, 29, 224, 224}, {5, 3, 224, 224}, {1, 1, 7, 9},
                              {640, 480, 224, 224}, {224, 10, 224, 224}, {10, 224, 224, 224}}) {
    Image img;
    img.width = w;
    img.height = h;
    img.rgb.resize(size_t(w) * h * 3);
    for (size_t i = 0; i < img.rgb.size(); ++i) img.rgb[i] = (i % 3 == 0) ? 0 : (i % 3 == 1) ? 255 : 77;
    Image r = sg::resize_bicubic(img, ow, oh);
    ASSERT_EQ(r.width, ow);
    ASSERT_EQ(r.height, oh);
    for (int i = 0; i < ow * oh; ++i) {
      ASSERT_EQ(r.rgb[3 * i + 0], 0) << w << "x" << h;
      ASSERT_EQ(r.rgb[3 * i + 1], 255) << w << "x" << h;
      ASSERT_EQ(r.rgb[3 * i + 2], 77) << w << "x" << h;
    }
  }
}

// Independent double-precision model of antialiased bicubic resampling (all
// taps, float weights, rounding after each pass). Pillow's fixed point may
// differ by one level; the reference tensors cover downscaling only, this
// also exercises upscaling and one-axis resizes.
static Image float_model_resize(const Image& in, int ow, int oh) {
  auto kernel = [](double x) {
    x = std::abs(x);
    if (x < 1) return 1.5 * x * x * x - 2.5 * x * x + 1;
    if (x < 2) return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
    return 0.0;
  };
  auto weights = [&](int n_in, int n_out) {
    std::vector<std::vector<double>> W(n_out, std::vector<double>(n_in));
    const double scale = double(n_in) / n_out, fs = std::max(1.0, scale);
    for (int i = 0; i < n_out; ++i) {
      const double c = (i + 0.5) * scale;
      double sum = 0;
      for (int j = 0; j < n_in; ++j) sum += W[i][j] = kernel((j + 0.5 - c) / fs);
      for (double& v : W[i]) v /= sum;
    }
    return W;
  };
  auto round8 = [](double v) { return uint8_t(std::clamp(std::floor(v + 0.5), 0.0, 255.0)); };
  Image tmp = in;
  if (ow != in.width) {
    auto W = weights(in.width, ow);
    tmp.width = ow;
    tmp.rgb.assign(size_t(ow) * in.height * 3, 0);
    for (int y = 0; y < in.height; ++y)
      for (int x = 0; x < ow; ++x)
        for (int c = 0; c < 3; ++c) {
          double s = 0;
          for (int j = 0; j < in.width; ++j) s += W[x][j] * in.pixel(j, y)[c];
          tmp.pixel(x, y)[c] = round8(s);
        }
  }
  Image out = tmp;
  if (oh != in.height) {
    auto W = weights(in.height, oh);
    out.height = oh;
    out.rgb.assign(size_t(tmp.width) * oh * 3, 0);
    for (int y = 0; y < oh; ++y)
      for (int x = 0; x < tmp.width; ++x)
        for (int c = 0; c < 3; ++c) {
          double s = 0;
          for (int j = 0; j < in.height; ++j) s += W[y][j] * tmp.pixel(x, j)[c];
          out.pixel(x, y)[c] = round8(s);
        }
  }
  return out;
}

TEST(ImagePreprocess, MatchesFloatModelWithinOneLevel) {
  for (auto [w, h, ow, oh] : {std::array<int, 4>{7, 5, 23, 17}, {40, 10, 13, 31}, {50, 50, 50, 20},
                              {30, 20, 61, 20}, {100, 80, 224, 224}, {300, 200, 224, 224}}) {
    Image in = make_noise(w, h, unsigned(w * 131 + h));
    Image got = sg::resize_bicubic(in, ow, oh);
    Image want = float_model_resize(in, ow, oh);
    ASSERT_EQ(got.width, ow);
    ASSERT_EQ(got.height, oh);
    int maxd = 0;
    for (size_t i = 0; i < got.rgb.size(); ++i) maxd = std::max(maxd, std::abs(got.rgb[i] - want.rgb[i]));
    EXPECT_LE(maxd, 1) << w << "x" << h << " -> " << ow << "x" << oh;
  }
  // Same size: untouched.
  Image in = make_noise(9, 4, 1);
  EXPECT_EQ(sg::resize_bicubic(in, 9, 4).rgb, in.rgb);
}

TEST(ImagePreprocess, NormalisationFormula) {
  Image img;
  img.width = 2;
  img.height = 1;
  img.rgb = {0, 128, 255, 255, 0, 10};
  auto x = sg::to_normalized_chw(img, sg::kClipMean, sg::kClipStd);
  ASSERT_EQ(x.size(), 6u);
  // CHW: channel 0 = {0, 255}, channel 1 = {128, 0}, channel 2 = {255, 10}.
  const int vals[3][2] = {{0, 255}, {128, 0}, {255, 10}};
  const double mean[3] = {0.48145466, 0.4578275, 0.40821073}, sd[3] = {0.26862954, 0.26130258, 0.27577711};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 2; ++i) EXPECT_NEAR(x[c * 2 + i], (vals[c][i] / 255.0 - mean[c]) / sd[c], 1e-6);
  expect_error([] { sg::resize_bicubic(Image{}, 224, 224); }, "resize");
  expect_error([&] { sg::resize_bicubic(img, 0, 5); }, "resize");
}

// ============================================================== decoding ====

TEST(ImageDecode, DetectsFormatByContentNotName) {
  sg::test::TempDir d;
  Image img = make_image(20, 10);
  Bytes png = sg::encode_png(img);
  write_file(d / "photo.jpg", png);  // a PNG with a .jpg name
  Image got = sg::decode_image((d / "photo.jpg").string());
  EXPECT_EQ(got.rgb, img.rgb);
  EXPECT_EQ(sg::detect_image_format(png.data(), png.size()), sg::ImageFormat::Png);
  Bytes jpg = sg::encode_jpeg(img, 90);
  EXPECT_EQ(sg::detect_image_format(jpg.data(), jpg.size()), sg::ImageFormat::Jpeg);
  const uint8_t heic[] = {0, 0, 0, 24, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c', 0, 0, 0, 0};
  EXPECT_EQ(sg::detect_image_format(heic, sizeof heic), sg::ImageFormat::Heif);
  const uint8_t mp4[] = {0, 0, 0, 20, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0, 'm', 'p', '4', '1'};
  EXPECT_EQ(sg::detect_image_format(mp4, sizeof mp4), sg::ImageFormat::Unknown);
  const uint8_t gen[] = {0, 0, 0, 24, 'f', 't', 'y', 'p', 'i', 's', 'o', 'm', 0, 0, 0, 0,
                         'i', 's', 'o', 'm', 'm', 'i', 'f', '1'};
  EXPECT_EQ(sg::detect_image_format(gen, sizeof gen), sg::ImageFormat::Heif);
}

TEST(ImageDecode, JpegRoundTripAndNoMetadata) {
  Image img = make_image(67, 41);
  Bytes jpg = sg::encode_jpeg(img, 95);
  Image got = decode(jpg);
  ASSERT_EQ(got.width, 67);
  ASSERT_EQ(got.height, 41);
  EXPECT_LT(mean_abs_diff(got, img), 2.0);
  // Only JFIF APP0, tables, frame and scan markers: no APP1..APP15 (EXIF, XMP,
  // ICC, ...) and no COM.
  auto m = jpeg_markers(jpg);
  ASSERT_FALSE(m.empty());
  EXPECT_EQ(m.back().code, 0xDA);
  for (auto& k : m) {
    EXPECT_FALSE(k.code >= 0xE1 && k.code <= 0xEF) << "APPn marker " << int(k.code);
    EXPECT_NE(k.code, 0xFE) << "COM marker";
  }
  // Quality is honoured, and bad arguments are refused.
  EXPECT_LT(sg::encode_jpeg(img, 30).size(), jpg.size());
  expect_error([&] { sg::encode_jpeg(img, 0); }, "JPEG encoder");
  expect_error([&] { sg::encode_jpeg(Image{}, 90); }, "JPEG encoder");
}

TEST(ImageDecode, JpegMetadataStrippedOnReencode) {
  // A photo carrying EXIF (orientation 6 here; could be GPS) loses it when
  // re-encoded, and the re-encoded pixels are upright.
  Image img = make_image(40, 24);
  Bytes with_exif = insert_app1(sg::encode_jpeg(img, 95), exif_orientation_block(6, true));
  Image upright = decode(with_exif);
  Bytes clean = sg::encode_jpeg(upright, 95);
  for (auto& k : jpeg_markers(clean)) EXPECT_NE(k.code, 0xE1);
  Image again = decode(clean);
  EXPECT_EQ(again.width, 24);
  EXPECT_EQ(again.height, 40);
}

TEST(ImageDecode, JpegGrayscaleAndProgressive) {
  Image img = make_image(33, 27);
  Image g = decode(write_jpeg(img, 95, false, true));
  ASSERT_EQ(g.width, 33);
  for (int i = 0; i < 33 * 27; ++i) {  // gray replicated into R = G = B
    ASSERT_EQ(g.rgb[3 * i], g.rgb[3 * i + 1]);
    ASSERT_EQ(g.rgb[3 * i], g.rgb[3 * i + 2]);
  }
  Image p = decode(write_jpeg(img, 95, true, false));
  EXPECT_LT(mean_abs_diff(p, img), 3.0);
}

// Pillow opens a 4-component JPEG as CMYK with rawmode "CMYK;I" (Adobe
// inverted) and converts with cmyk2rgb: nk = 255 - K,
// R = nk - MULDIV255(C, nk) with MULDIV255(a, b) = ((t >> 8) + t) >> 8, t = a*b + 128.
// Expected values worked out by hand from that formula.
TEST(ImageDecode, CmykJpegLikePillow) {
  Image img = decode(write_jpeg_cmyk({200, 100, 30, 150}, {0, 255, 255, 255}));
  ASSERT_EQ(img.width, 16);
  ASSERT_EQ(img.height, 8);
  // raw (200,100,30,150) -> C,M,Y,K = 55,155,225,105, nk = 150 -> 150-32, 150-91, 150-132.
  const int want_left[3] = {118, 59, 18};
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 16; ++x)
      for (int c = 0; c < 3; ++c) {
        // Right: raw (0,255,255,255) = full cyan, no K: (0, 255, 255); the
        // rounding of MULDIV255 matters here (255*255/256 would give 1).
        const int want = x < 8 ? want_left[c] : (c == 0 ? 0 : 255);
        ASSERT_EQ(img.pixel(x, y)[c], want) << x << "," << y << " channel " << c;
      }
}

TEST(ImageDecode, PngRoundTripIsExactAndClean) {
  Image img = make_noise(31, 17, 7);
  Bytes png = sg::encode_png(img);
  EXPECT_EQ(decode(png).rgb, img.rgb);
  EXPECT_EQ(png_chunk_types(png), (std::vector<std::string>{"IHDR", "IDAT", "IEND"}));
  expect_error([&] { sg::encode_png(Image{}); }, "PNG encoder");
}

// Every PNG pixel layout, converted like Pillow's convert('RGB').
TEST(ImageDecode, PngLayoutsLikePillowConvertRgb) {
  const int w = 5, h = 3;
  auto check = [&](const PngSpec& s, const std::vector<std::array<uint8_t, 3>>& want, const char* what) {
    Bytes b = write_png(s);
    ASSERT_FALSE(b.empty()) << what;
    Image got = decode(b);
    ASSERT_EQ(got.width, w) << what;
    ASSERT_EQ(got.height, h) << what;
    for (int i = 0; i < w * h; ++i)
      for (int c = 0; c < 3; ++c)
        ASSERT_EQ(got.rgb[3 * i + c], want[i][c]) << what << " pixel " << i << " channel " << c;
  };
  for (bool interlace : {false, true}) {
    // 8-bit gray.
    PngSpec s;
    s.w = w;
    s.h = h;
    s.interlace = interlace;
    s.color_type = PNG_COLOR_TYPE_GRAY;
    std::vector<std::array<uint8_t, 3>> want;
    for (int y = 0; y < h; ++y) {
      Bytes r;
      for (int x = 0; x < w; ++x) {
        uint8_t v = uint8_t(x * 50 + y * 7);
        r.push_back(v);
        want.push_back({v, v, v});
      }
      s.rows.push_back(r);
    }
    check(s, want, "gray8");

    // 16-bit RGBA: high byte kept, alpha dropped (not composited).
    s = PngSpec{};
    s.w = w;
    s.h = h;
    s.interlace = interlace;
    s.color_type = PNG_COLOR_TYPE_RGB_ALPHA;
    s.bit_depth = 16;
    want.clear();
    for (int y = 0; y < h; ++y) {
      Bytes r;
      for (int x = 0; x < w; ++x) {
        uint16_t v[4] = {uint16_t(x * 12345 + 99), uint16_t(y * 20000 + 255), uint16_t(0xABFF - x * 256),
                         uint16_t(x * 1000)};  // alpha 0 at x = 0
        for (uint16_t c : v) r.insert(r.end(), {uint8_t(c >> 8), uint8_t(c & 255)});
        want.push_back({uint8_t(v[0] >> 8), uint8_t(v[1] >> 8), uint8_t(v[2] >> 8)});
      }
      s.rows.push_back(r);
    }
    check(s, want, "rgba16");

    // 8-bit gray + alpha.
    s = PngSpec{};
    s.w = w;
    s.h = h;
    s.interlace = interlace;
    s.color_type = PNG_COLOR_TYPE_GRAY_ALPHA;
    want.clear();
    for (int y = 0; y < h; ++y) {
      Bytes r;
      for (int x = 0; x < w; ++x) {
        uint8_t v = uint8_t(200 - x * 30 - y);
        r.insert(r.end(), {v, uint8_t(x * 60)});
        want.push_back({v, v, v});
      }
      s.rows.push_back(r);
    }
    check(s, want, "gray+alpha");

    // 4-bit palette with tRNS: colours looked up, transparency ignored.
    s = PngSpec{};
    s.w = w;
    s.h = h;
    s.interlace = interlace;
    s.color_type = PNG_COLOR_TYPE_PALETTE;
    s.bit_depth = 4;
    for (int i = 0; i < 16; ++i) s.palette.push_back(png_color{uint8_t(i * 16), uint8_t(255 - i), uint8_t(i * 3)});
    s.trns = {0, 128, 255, 7};
    want.clear();
    for (int y = 0; y < h; ++y) {
      Bytes r((w + 1) / 2, 0);
      for (int x = 0; x < w; ++x) {
        int idx = (x * 3 + y * 5) % 16;
        r[x / 2] |= uint8_t(idx << (x % 2 ? 0 : 4));
        want.push_back({s.palette[idx].red, s.palette[idx].green, s.palette[idx].blue});
      }
      s.rows.push_back(r);
    }
    check(s, want, "palette4+tRNS");

    // 1-bit and 2-bit gray: scaled to 0..255 (x255, x85).
    for (int bd : {1, 2}) {
      s = PngSpec{};
      s.w = w;
      s.h = h;
      s.interlace = interlace;
      s.color_type = PNG_COLOR_TYPE_GRAY;
      s.bit_depth = bd;
      want.clear();
      const int maxv = (1 << bd) - 1, per = 8 / bd;
      for (int y = 0; y < h; ++y) {
        Bytes r((w * bd + 7) / 8, 0);
        for (int x = 0; x < w; ++x) {
          int v = (x + y) % (maxv + 1);
          r[x / per] |= uint8_t(v << (8 - bd * (x % per + 1)));
          uint8_t e = uint8_t(v * 255 / maxv);
          want.push_back({e, e, e});
        }
        s.rows.push_back(r);
      }
      check(s, want, bd == 1 ? "gray1" : "gray2");
    }
  }
}

TEST(ImageDecode, WebpLosslessExactLossyClose) {
  Image img = make_noise(29, 19, 3);
  uint8_t* out = nullptr;
  size_t n = WebPEncodeLosslessRGB(img.rgb.data(), img.width, img.height, img.width * 3, &out);
  ASSERT_GT(n, 0u);
  Bytes ll(out, out + n);
  WebPFree(out);
  EXPECT_EQ(sg::detect_image_format(ll.data(), ll.size()), sg::ImageFormat::Webp);
  EXPECT_EQ(decode(ll).rgb, img.rgb);

  // With an alpha channel (nowhere fully transparent): RGB kept, alpha dropped.
  Bytes rgba;
  for (size_t i = 0; i < img.rgb.size(); i += 3)
    rgba.insert(rgba.end(), {img.rgb[i], img.rgb[i + 1], img.rgb[i + 2], uint8_t(1 + i % 250)});
  n = WebPEncodeLosslessRGBA(rgba.data(), img.width, img.height, img.width * 4, &out);
  ASSERT_GT(n, 0u);
  Bytes la(out, out + n);
  WebPFree(out);
  EXPECT_EQ(decode(la).rgb, img.rgb);

  Image smooth = make_image(48, 32);
  n = WebPEncodeRGB(smooth.rgb.data(), smooth.width, smooth.height, smooth.width * 3, 95, &out);
  ASSERT_GT(n, 0u);
  Bytes lossy(out, out + n);
  WebPFree(out);
  Image got = decode(lossy);
  ASSERT_EQ(got.width, 48);
  EXPECT_LT(mean_abs_diff(got, smooth), 4.0);

  for (size_t cut : {size_t(10), size_t(20), ll.size() / 2, ll.size() - 3}) {
    SCOPED_TRACE(cut);
    expect_mem_error(Bytes(ll.begin(), ll.begin() + cut));
  }
  for (size_t cut : {size_t(30), lossy.size() / 2, lossy.size() - 5}) {
    SCOPED_TRACE(cut);
    expect_mem_error(Bytes(lossy.begin(), lossy.begin() + cut));
  }
}

TEST(ImageDecode, HeicEncodeDecodeAndOrientation) {
  Image img = make_image(64, 48);
  Bytes heic = write_heic(img, 90);
  if (heic.empty()) GTEST_SKIP() << "libheif has no HEVC encoder here; HEIF error paths are tested elsewhere";
  EXPECT_EQ(sg::detect_image_format(heic.data(), heic.size()), sg::ImageFormat::Heif);
  Image got = decode(heic);
  ASSERT_EQ(got.width, 64);
  ASSERT_EQ(got.height, 48);
  EXPECT_LT(mean_abs_diff(got, img), 6.0);

  // HEIF's own irot/imir transform (orientation 6 = 90 degrees clockwise).
  Bytes rot = write_heic(img, 90, heif_orientation_rotate_90_cw);
  ASSERT_FALSE(rot.empty());
  Image upright = decode(rot);
  ASSERT_EQ(upright.width, 48);
  ASSERT_EQ(upright.height, 64);
  EXPECT_LT(mean_abs_diff(upright, sg::apply_exif_orientation(img, 6)), 6.0);
  Image stored = decode(rot, kExact);
  ASSERT_EQ(stored.width, 64);
  EXPECT_LT(mean_abs_diff(stored, img), 6.0);

  for (size_t cut : {size_t(12), size_t(40), heic.size() / 2, heic.size() - 10}) {
    SCOPED_TRACE(cut);
    expect_mem_error(Bytes(heic.begin(), heic.begin() + cut));
  }
}

TEST(ImageDecode, HeifGarbageRefused) {
  Bytes b = {0, 0, 0, 24, 'f', 't', 'y', 'p', 'h', 'e', 'i', 'c', 0, 0, 0, 0, 'm', 'i', 'f', '1', 'h', 'e', 'i', 'c'};
  expect_mem_error(b, "HEIF");
  b.resize(400, 0x5A);
  expect_mem_error(b, "HEIF");
}

// ============================================================ orientation ====

TEST(ImageOrientation, AllEightExifOrientations) {
  // 3x2 picture, pixels labelled a..f:   a b c
  //                                      d e f
  Image img;
  img.width = 3;
  img.height = 2;
  for (uint8_t v = 'a'; v <= 'f'; ++v) img.rgb.insert(img.rgb.end(), {v, uint8_t(v + 100), uint8_t(v ^ 0x55)});
  auto labels = [](const Image& m) {
    std::string s;
    for (int y = 0; y < m.height; ++y) {
      if (y) s += '/';
      for (int x = 0; x < m.width; ++x) {
        const uint8_t* p = m.pixel(x, y);
        EXPECT_EQ(p[1], uint8_t(p[0] + 100));
        EXPECT_EQ(p[2], uint8_t(p[0] ^ 0x55));
        s += char(p[0]);
      }
    }
    return s;
  };
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 1)), "abc/def");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 2)), "cba/fed");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 3)), "fed/cba");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 4)), "def/abc");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 5)), "ad/be/cf");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 6)), "da/eb/fc");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 7)), "fc/eb/da");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 8)), "cf/be/ad");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 0)), "abc/def");
  EXPECT_EQ(labels(sg::apply_exif_orientation(img, 9)), "abc/def");
}

TEST(ImageOrientation, JpegExifOrientation6IsRotated) {
  // 48x32, left half red, right half blue; the top-left quadrant is brighter.
  Image img;
  img.width = 48;
  img.height = 32;
  img.rgb.resize(48 * 32 * 3);
  for (int y = 0; y < 32; ++y)
    for (int x = 0; x < 48; ++x) {
      uint8_t* p = img.pixel(x, y);
      const bool left = x < 24, top = y < 16;
      p[0] = left ? 220 : 20;
      p[1] = (left && top) ? 200 : 30;
      p[2] = left ? 20 : 220;
    }
  sg::test::TempDir d;
  Bytes jpg = insert_app1(sg::encode_jpeg(img, 95), exif_orientation_block(6, true));
  write_file(d / "rotated.jpg", jpg);

  Image raw = sg::decode_image((d / "rotated.jpg").string(), kExact);  // like Pillow: stored pixels
  ASSERT_EQ(raw.width, 48);
  ASSERT_EQ(raw.height, 32);
  Image up = sg::decode_image((d / "rotated.jpg").string());  // default: upright
  ASSERT_EQ(up.width, 32);
  ASSERT_EQ(up.height, 48);
  EXPECT_EQ(up.rgb, sg::apply_exif_orientation(raw, 6).rgb);
  // Rotating 90 degrees clockwise puts the old left (red) half on top and the
  // old top-left quadrant at the top right.
  auto top = mean_rgb(up, 0, 0, 32, 24), bottom = mean_rgb(up, 0, 24, 32, 48);
  EXPECT_GT(top[0], 180);
  EXPECT_LT(top[2], 60);
  EXPECT_GT(bottom[2], 180);
  EXPECT_GT(mean_rgb(up, 16, 0, 32, 24)[1], 160);
  EXPECT_LT(mean_rgb(up, 0, 0, 16, 24)[1], 70);

  // The same EXIF without the "Exif\0\0" prefix is not a valid APP1: ignored.
  Image ignored = decode(insert_app1(sg::encode_jpeg(img, 95), exif_orientation_block(6, false)));
  EXPECT_EQ(ignored.width, 48);
}

TEST(ImageOrientation, PngAndWebpExifOrientation) {
  Image img = make_noise(6, 4, 11);
  PngSpec s;
  s.w = 6;
  s.h = 4;
  for (int y = 0; y < 4; ++y) s.rows.emplace_back(img.pixel(0, y), img.pixel(0, y) + 18);
  s.exif = exif_orientation_block(8, false);
  Bytes png = write_png(s);
  ASSERT_FALSE(png.empty());
  EXPECT_EQ(decode(png).rgb, sg::apply_exif_orientation(img, 8).rgb);
  EXPECT_EQ(decode(png).width, 4);
  EXPECT_EQ(decode(png, kExact).rgb, img.rgb);

  // WebP: add an EXIF chunk to a VP8L file by rewriting it as an extended
  // (VP8X) file with the EXIF flag.
  uint8_t* out = nullptr;
  size_t n = WebPEncodeLosslessRGB(img.rgb.data(), 6, 4, 18, &out);
  ASSERT_GT(n, 0u);
  Bytes simple(out, out + n);
  WebPFree(out);
  Bytes exif = exif_orientation_block(3, false);
  auto le32 = [](Bytes& b, uint32_t v) {
    for (int i = 0; i < 4; ++i) b.push_back(uint8_t(v >> (8 * i)));
  };
  Bytes body = {'W', 'E', 'B', 'P', 'V', 'P', '8', 'X'};
  le32(body, 10);
  body.insert(body.end(), {0x08, 0, 0, 0, 5, 0, 0, 3, 0, 0});  // EXIF flag; canvas 6x4 (minus one)
  body.insert(body.end(), simple.begin() + 12, simple.end());   // the VP8L chunk
  body.insert(body.end(), {'E', 'X', 'I', 'F'});
  le32(body, uint32_t(exif.size()));
  body.insert(body.end(), exif.begin(), exif.end());
  if (exif.size() & 1) body.push_back(0);
  Bytes webp = {'R', 'I', 'F', 'F'};
  le32(webp, uint32_t(body.size()));
  webp.insert(webp.end(), body.begin(), body.end());
  EXPECT_EQ(decode(webp).rgb, sg::apply_exif_orientation(img, 3).rgb);
  EXPECT_EQ(decode(webp, kExact).rgb, img.rgb);
}

// ============================================================ bad inputs ====

TEST(ImageBadInput, TruncatedJpegRefused) {
  const Bytes ref = to_bytes(
      sg::test::read_bytes(sg::test::ref_dir() / "images" / "isic2017_melanoma_ISIC_0012395.jpg"));
  Bytes prog = write_jpeg(make_image(64, 48), 90, true, false);
  for (const Bytes* b : std::vector<const Bytes*>{&ref, &prog}) {
    ASSERT_NO_THROW(decode(*b));
    for (size_t cut : {size_t(1), size_t(2), size_t(3), size_t(20), size_t(200), b->size() / 3, b->size() / 2,
                       b->size() - 100, b->size() - 2}) {
      SCOPED_TRACE(cut);
      expect_mem_error(Bytes(b->begin(), b->begin() + cut));
    }
  }
  // Through a file: the message names the file.
  sg::test::TempDir d;
  const std::string p = (d / "cut.jpg").string();
  write_file(p, Bytes(ref.begin(), ref.begin() + ref.size() / 2));
  expect_error([&] { sg::decode_image(p); }, p, "JPEG");
}

TEST(ImageBadInput, TruncatedPngRefused) {
  Bytes png = sg::encode_png(make_noise(40, 30, 5));  // incompressible: a long IDAT
  ASSERT_EQ(png_chunk_types(png).back(), "IEND");
  for (size_t cut : {size_t(4), size_t(8), size_t(20), size_t(33), size_t(60), png.size() / 2,
                     png.size() - 20}) {
    SCOPED_TRACE(cut);
    expect_mem_error(Bytes(png.begin(), png.begin() + cut), "PNG");
  }
  // Only IEND lost: every pixel is there, so (like Pillow) it decodes.
  EXPECT_EQ(decode(Bytes(png.begin(), png.end() - 12)).width, 40);
  // A corrupted IDAT byte fails the chunk CRC.
  Bytes bad = png;
  bad[png.size() / 2] ^= 0x40;
  expect_mem_error(bad, "PNG");
}

TEST(ImageBadInput, NotAnImageEmptyMissing) {
  sg::test::TempDir d;
  const std::string txt = (d / "notes.jpg").string();
  write_file(txt, to_bytes("Patient notes: lesion on left forearm.\n"));
  expect_error([&] { sg::decode_image(txt); }, txt, "not a supported image");
  expect_error([&] { sg::decode_image(txt); }, txt, "text");
  const std::string empty = (d / "empty.png").string();
  write_file(empty, {});
  expect_error([&] { sg::decode_image(empty); }, empty, "empty");
  const std::string missing = (d / "missing.jpg").string();
  expect_error([&] { sg::decode_image(missing); }, missing, "no such file");
  expect_error([&] { sg::decode_image(d.path().string()); }, d.path().string(), "not a regular file");
  expect_mem_error(to_bytes("GIF89a\x01\x00\x01\x00"), "GIF");
  expect_mem_error({0xFF, 0xD8}, "not a supported image");  // too short even for the magic
  expect_mem_error({0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'}, "PNG");
}

TEST(ImageBadInput, ZeroSizedRefused) {
  expect_mem_error(png_header_only(0, 0, true), "PNG");
  expect_mem_error(png_header_only(0, 10, true), "PNG");
  // JPEG with its SOF dimensions patched to 0x0.
  Bytes jpg = sg::encode_jpeg(make_image(16, 16), 90);
  for (auto& m : jpeg_markers(jpg))
    if (m.code == 0xC0) std::fill(jpg.begin() + m.pos + 5, jpg.begin() + m.pos + 9, 0);
  expect_mem_error(jpg, "JPEG");
}

TEST(ImageBadInput, HugeHeadersRefusedBeforeAllocation) {
  // 100000 x 100000 = 10 gigapixels, 30 GB as RGB: refused on the header with
  // the size in the message (the files hold no pixel data at all).
  expect_mem_error(png_header_only(100000, 100000, true), "megapixels");
  expect_mem_error(png_header_only(8000, 6251, false), "megapixels");  // 50.008 MP, just over
  // JPEG dimensions are 16-bit: 65000 x 65000.
  Bytes jpg = sg::encode_jpeg(make_image(16, 16), 90);
  bool patched = false;
  for (auto& m : jpeg_markers(jpg))
    if (m.code == 0xC0) {
      jpg[m.pos + 5] = jpg[m.pos + 7] = 0xFD;
      jpg[m.pos + 6] = jpg[m.pos + 8] = 0xE8;
      patched = true;
    }
  ASSERT_TRUE(patched);
  expect_mem_error(jpg, "megapixels");
  // A real file over a lowered limit.
  DecodeOptions small;
  small.max_pixels = 100000;
  expect_error([&] {
    sg::decode_image((sg::test::ref_dir() / "images" / "synthetic_500x375.png").string(), small);
  }, (sg::test::ref_dir() / "images" / "synthetic_500x375.png").string(), "megapixels");
  // WebP: an extended header claiming a 20000 x 20000 canvas.
  Bytes webp = {'R', 'I', 'F', 'F', 0, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X', 10, 0, 0, 0,
                0, 0, 0, 0, 0x1F, 0x4E, 0, 0x1F, 0x4E, 0};
  Bytes vp8l = {'V', 'P', '8', 'L', 5, 0, 0, 0, 0x2f, 0, 0, 0, 0, 0};
  webp.insert(webp.end(), vp8l.begin(), vp8l.end());
  const uint32_t riff = uint32_t(webp.size() - 8);
  for (int i = 0; i < 4; ++i) webp[4 + i] = uint8_t(riff >> (8 * i));
  expect_mem_error(webp);
}

// Random byte corruption of valid files of every format: decoding may succeed
// or throw sg::Error, but nothing else (no crash, no other exception).
TEST(ImageBadInput, FuzzedBytesNeverCrash) {
  std::vector<Bytes> seeds;
  seeds.push_back(sg::encode_jpeg(make_image(40, 24), 80));
  seeds.push_back(write_jpeg(make_image(40, 24), 80, true, false));
  seeds.push_back(sg::encode_png(make_image(40, 24)));
  uint8_t* out = nullptr;
  Image w = make_image(40, 24);
  size_t n = WebPEncodeRGB(w.rgb.data(), 40, 24, 120, 80, &out);
  seeds.emplace_back(out, out + n);
  WebPFree(out);
  n = WebPEncodeLosslessRGB(w.rgb.data(), 40, 24, 120, &out);
  seeds.emplace_back(out, out + n);
  WebPFree(out);
  Bytes heic = write_heic(make_image(32, 32), 50);
  if (!heic.empty()) seeds.push_back(heic);
  std::mt19937 rng(1234);
  int decoded = 0, refused = 0;
  for (const Bytes& s : seeds) {
    for (int it = 0; it < 150; ++it) {
      Bytes b = s;
      const int flips = 1 + int(rng() % 8);
      for (int f = 0; f < flips; ++f) b[rng() % b.size()] = uint8_t(rng());
      if (rng() % 4 == 0) b.resize(1 + rng() % b.size());
      try {
        Image img = decode(b);
        ASSERT_EQ(img.rgb.size(), size_t(img.width) * img.height * 3);
        ++decoded;
      } catch (const sg::Error& e) {
        ASSERT_EQ(std::string(e.what()).rfind("mem: ", 0), 0u) << e.what();
        ++refused;
      }
    }
  }
  EXPECT_GT(refused, 0);
  EXPECT_GT(decoded, 0);
}
