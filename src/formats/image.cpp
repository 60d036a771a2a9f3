// Image decoding (JPEG, PNG, WebP, HEIF) to 8-bit RGB and metadata-free
// encoding (JPEG, PNG). See image.h for the contract and docs/image-input.md.
//
// libjpeg and libpng report fatal errors by calling a handler that must not
// return; both are given one that longjmps back to a setjmp in a small
// "impl" function holding only plain C data, so no C++ destructor is ever
// skipped. Everything with a destructor lives in a context struct owned by the
// caller, which also releases the library state.
#include "formats/image.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

// clang-format off
#include <jpeglib.h>
#include <jerror.h>
// clang-format on
#include <libexif/exif-data.h>
#include <libheif/heif.h>
#include <png.h>
#include <webp/decode.h>

#include "core/error.h"

namespace sg {

namespace {

constexpr uint64_t kMaxFileBytes = uint64_t{1} << 30;  // 1 GiB of compressed input
constexpr int kMaxJpegScans = 1000;                     // progressive-JPEG CPU bomb guard
constexpr long kJpegMaxMemory = 1536L << 20;            // libjpeg working memory cap

// One line: library messages (libheif's especially) may contain newlines.
[[noreturn]] void fail(const std::string& name, const std::string& what) {
  std::string m = name + ": " + what;
  while (!m.empty() && (m.back() == '\n' || m.back() == '\r' || m.back() == ' ')) m.pop_back();
  for (char& c : m)
    if (c == '\n' || c == '\r') c = ' ';
  throw Error(m);
}

std::string dims_str(int64_t w, int64_t h) { return std::to_string(w) + "x" + std::to_string(h); }

// Refuse 0-sized or too large images; called with header dimensions, before
// any pixel buffer exists.
void check_dims(const std::string& name, const char* fmt, int64_t w, int64_t h,
                const DecodeOptions& opt) {
  if (w <= 0 || h <= 0) fail(name, std::string(fmt) + " image has no pixels (" + dims_str(w, h) + ")");
  if (w * h > opt.max_pixels) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "image is %s (%.1f megapixels), above the limit of %.1f megapixels",
                  dims_str(w, h).c_str(), static_cast<double>(w) * h / 1e6, opt.max_pixels / 1e6);
    fail(name, buf);
  }
}

Image blank_image(int w, int h) {
  Image img;
  img.width = w;
  img.height = h;
  img.rgb.resize(static_cast<size_t>(w) * h * 3);
  return img;
}

// ---------------------------------------------------------------- EXIF ----

// Orientation (1..8) from EXIF data that starts with "Exif\0\0" or directly
// with the TIFF header ("II*\0" / "MM\0*"). 1 when absent or unreadable.
int exif_orientation(const uint8_t* data, size_t size) {
  if (!data || size < 8 || size > (64u << 20)) return 1;
  std::vector<uint8_t> buf;
  if (std::memcmp(data, "Exif\0\0", 6) != 0) {
    // libexif wants the "Exif\0\0" prefix in front of a bare TIFF block.
    buf.assign({'E', 'x', 'i', 'f', 0, 0});
    buf.insert(buf.end(), data, data + size);
    data = buf.data();
    size = buf.size();
  }
  ExifData* ed = exif_data_new();
  if (!ed) return 1;
  // Read-only use: do not let libexif "repair" tags or drop unknown ones.
  exif_data_unset_option(ed, EXIF_DATA_OPTION_FOLLOW_SPECIFICATION);
  exif_data_load_data(ed, data, static_cast<unsigned int>(size));
  int orientation = 1;
  if (ExifEntry* e = exif_data_get_entry(ed, EXIF_TAG_ORIENTATION)) {
    if (e->format == EXIF_FORMAT_SHORT && e->components >= 1 && e->data && e->size >= 2) {
      int v = exif_get_short(e->data, exif_data_get_byte_order(ed));
      if (v >= 1 && v <= 8) orientation = v;
    }
  }
  exif_data_unref(ed);
  return orientation;
}

// ---------------------------------------------------------------- JPEG ----

struct JpegErr {
  jpeg_error_mgr pub;
  std::jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
  int max_scans;
};

extern "C" void sg_jpeg_error_exit(j_common_ptr c) {
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  (*c->err->format_message)(c, e->msg);
  std::longjmp(e->jb, 1);
}

// Warnings (level -1): libjpeg substitutes gray data for a truncated file and
// goes on; Pillow refuses such a file ("image file is truncated"), so do we.
// Other corrupt-data warnings are ignored, as Pillow does.
extern "C" void sg_jpeg_emit_message(j_common_ptr c, int level) {
  if (level < 0) {
    c->err->num_warnings++;
    if (c->err->msg_code == JWRN_JPEG_EOF) sg_jpeg_error_exit(c);
  }
}

extern "C" void sg_jpeg_output_message(j_common_ptr) {}

extern "C" void sg_jpeg_progress(j_common_ptr c) {
  if (!c->is_decompressor) return;
  auto* d = reinterpret_cast<j_decompress_ptr>(c);
  auto* e = reinterpret_cast<JpegErr*>(c->err);
  if (d->input_scan_number > e->max_scans) {
    std::snprintf(e->msg, sizeof e->msg, "JPEG has more than %d progressive scans", e->max_scans);
    std::longjmp(e->jb, 1);
  }
}

void init_jpeg_err(JpegErr& e) {
  jpeg_std_error(&e.pub);
  e.pub.error_exit = sg_jpeg_error_exit;
  e.pub.emit_message = sg_jpeg_emit_message;
  e.pub.output_message = sg_jpeg_output_message;
  e.msg[0] = 0;
  e.max_scans = kMaxJpegScans;
}

struct JpegDecodeCtx {
  const uint8_t* data = nullptr;
  size_t size = 0;
  const std::string* name = nullptr;
  const DecodeOptions* opt = nullptr;
  jpeg_decompress_struct cinfo{};
  JpegErr err{};
  jpeg_progress_mgr progress{};
  bool created = false;
  Image img;
  std::vector<uint8_t> row;  // one CMYK row when needed
  int orientation = 1;
  ~JpegDecodeCtx() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

// Returns false on a libjpeg error (message in ctx->err.msg). C++ exceptions
// (dimension limits, bad_alloc) may also leave it; the ctx cleans up.
bool jpeg_decode_impl(JpegDecodeCtx* ctx) {
  j_decompress_ptr cinfo = &ctx->cinfo;
  cinfo->err = &ctx->err.pub;
  init_jpeg_err(ctx->err);
  if (setjmp(ctx->err.jb)) return false;
  jpeg_create_decompress(cinfo);
  ctx->created = true;
  cinfo->mem->max_memory_to_use = kJpegMaxMemory;
  ctx->progress.progress_monitor = sg_jpeg_progress;
  cinfo->progress = &ctx->progress;
  jpeg_mem_src(cinfo, ctx->data, static_cast<unsigned long>(ctx->size));
  if (ctx->opt->apply_orientation) jpeg_save_markers(cinfo, JPEG_APP0 + 1, 0xFFFF);
  jpeg_read_header(cinfo, TRUE);

  check_dims(*ctx->name, "JPEG", cinfo->image_width, cinfo->image_height, *ctx->opt);
  // Saved markers live until jpeg_finish_decompress: read the orientation now.
  if (ctx->opt->apply_orientation) {
    for (jpeg_saved_marker_ptr m = cinfo->marker_list; m; m = m->next) {
      if (m->marker == JPEG_APP0 + 1 && m->data_length >= 6 && std::memcmp(m->data, "Exif\0\0", 6) == 0) {
        ctx->orientation = exif_orientation(m->data, m->data_length);
        break;
      }
    }
  }

  // Pillow's decode: libjpeg defaults (islow IDCT, fancy upsampling), RGB out
  // for YCbCr/RGB/gray; CMYK/YCCK out as (Adobe-inverted) CMYK.
  const bool cmyk = cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK;
  cinfo->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
  cinfo->dct_method = JDCT_ISLOW;
  cinfo->do_fancy_upsampling = TRUE;
  jpeg_start_decompress(cinfo);
  if (cinfo->output_components != (cmyk ? 4 : 3)) {
    std::snprintf(ctx->err.msg, sizeof ctx->err.msg, "unsupported JPEG colour layout (%d components)",
                  cinfo->output_components);
    return false;
  }
  const int w = static_cast<int>(cinfo->output_width), h = static_cast<int>(cinfo->output_height);
  ctx->img = blank_image(w, h);
  if (cmyk) ctx->row.resize(static_cast<size_t>(w) * 4);
  while (cinfo->output_scanline < cinfo->output_height) {
    const int y = static_cast<int>(cinfo->output_scanline);
    JSAMPROW rowp = cmyk ? ctx->row.data() : ctx->img.pixel(0, y);
    if (jpeg_read_scanlines(cinfo, &rowp, 1) != 1) {
      std::snprintf(ctx->err.msg, sizeof ctx->err.msg, "JPEG data ended early");
      return false;
    }
    if (cmyk) {
      // Pillow: rawmode "CMYK;I" (invert), then cmyk2rgb:
      // nk = 255 - K; R = clip(nk - nk*C/255) with its rounding MULDIV255.
      uint8_t* out = ctx->img.pixel(0, y);
      const uint8_t* in = ctx->row.data();
      for (int x = 0; x < w; ++x, in += 4, out += 3) {
        const int nk = in[3];  // 255 - K where K = 255 - raw
        for (int c = 0; c < 3; ++c) {
          int tmp = (255 - in[c]) * nk + 128;
          int v = nk - (((tmp >> 8) + tmp) >> 8);
          out[c] = static_cast<uint8_t>(v < 0 ? 0 : v > 255 ? 255 : v);
        }
      }
    }
  }
  jpeg_finish_decompress(cinfo);
  return true;
}

Image decode_jpeg(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  auto ctx = std::make_unique<JpegDecodeCtx>();
  ctx->data = data;
  ctx->size = size;
  ctx->name = &name;
  ctx->opt = &opt;
  if (!jpeg_decode_impl(ctx.get())) fail(name, std::string("bad or truncated JPEG: ") + ctx->err.msg);
  if (ctx->orientation != 1) return apply_exif_orientation(ctx->img, ctx->orientation);
  return std::move(ctx->img);
}

// ----------------------------------------------------------------- PNG ----

struct PngDecodeCtx {
  const uint8_t* data = nullptr;
  size_t size = 0, pos = 0;
  const std::string* name = nullptr;
  const DecodeOptions* opt = nullptr;
  png_structp png = nullptr;
  png_infop info = nullptr;
  char msg[256] = {0};
  bool image_done = false;  // pixels complete; errors after this are ignored
  Image img;
  std::vector<png_bytep> rows;
  ~PngDecodeCtx() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

extern "C" void sg_png_error(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngDecodeCtx*>(png_get_error_ptr(png));
  std::snprintf(ctx->msg, sizeof ctx->msg, "%s", msg ? msg : "error");
  png_longjmp(png, 1);
}
extern "C" void sg_png_warning(png_structp, png_const_charp) {}

extern "C" void sg_png_read(png_structp png, png_bytep out, size_t n) {
  auto* ctx = static_cast<PngDecodeCtx*>(png_get_io_ptr(png));
  if (n > ctx->size - ctx->pos) png_error(png, "file is truncated");
  std::memcpy(out, ctx->data + ctx->pos, n);
  ctx->pos += n;
}

bool png_decode_impl(PngDecodeCtx* ctx) {
  ctx->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, ctx, sg_png_error, sg_png_warning);
  if (!ctx->png) {
    std::snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
    return false;
  }
  ctx->info = png_create_info_struct(ctx->png);
  if (!ctx->info) {
    std::snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
    return false;
  }
  png_structp png = ctx->png;
  png_infop info = ctx->info;
  if (setjmp(png_jmpbuf(png))) return ctx->image_done;
  png_set_read_fn(png, ctx, sg_png_read);
  png_read_info(png, info);

  png_uint_32 w = 0, h = 0;
  int bit_depth = 0, color_type = 0, interlace = 0;
  png_get_IHDR(png, info, &w, &h, &bit_depth, &color_type, &interlace, nullptr, nullptr);
  check_dims(*ctx->name, "PNG", w, h, *ctx->opt);

  // Like Pillow's Image.open().convert('RGB'): palette looked up, gray
  // replicated (1/2/4-bit scaled to 0..255), 16-bit reduced to the high byte,
  // alpha and tRNS dropped without compositing, gAMA/iCCP ignored.
  if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (bit_depth == 16) png_set_strip_16(png);
  if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_strip_alpha(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  if (png_get_channels(png, info) != 3 || png_get_bit_depth(png, info) != 8 ||
      png_get_rowbytes(png, info) != static_cast<size_t>(w) * 3) {
    std::snprintf(ctx->msg, sizeof ctx->msg, "unsupported PNG layout (colour type %d, %d-bit)", color_type,
                  bit_depth);
    return false;
  }
  ctx->img = blank_image(static_cast<int>(w), static_cast<int>(h));
  ctx->rows.resize(h);
  for (png_uint_32 y = 0; y < h; ++y) ctx->rows[y] = ctx->img.pixel(0, static_cast<int>(y));
  png_read_image(png, ctx->rows.data());
  ctx->image_done = true;
  // Chunks after the image (an eXIf may be there); a damaged tail is
  // tolerated, as Pillow does, since the pixels are complete.
  png_read_end(png, info);
  return true;
}

Image decode_png(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  // The IHDR must be the first chunk: check its dimensions before libpng
  // (which would first read every chunk up to the image data).
  if (size >= 24 && std::memcmp(data + 12, "IHDR", 4) == 0) {
    auto be32 = [](const uint8_t* p) {
      return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
    };
    check_dims(name, "PNG", be32(data + 16), be32(data + 20), opt);
  }
  auto ctx = std::make_unique<PngDecodeCtx>();
  ctx->data = data;
  ctx->size = size;
  ctx->name = &name;
  ctx->opt = &opt;
  if (!png_decode_impl(ctx.get())) fail(name, std::string("bad or truncated PNG: ") + ctx->msg);
  if (opt.apply_orientation) {
    png_uint_32 n = 0;
    png_bytep exif = nullptr;
    if (png_get_eXIf_1(ctx->png, ctx->info, &n, &exif) && exif && n > 0) {
      int o = exif_orientation(exif, n);
      if (o != 1) return apply_exif_orientation(ctx->img, o);
    }
  }
  return std::move(ctx->img);
}

// ---------------------------------------------------------------- WebP ----

const char* webp_status(VP8StatusCode s) {
  switch (s) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt bitstream";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "unsupported feature";
    case VP8_STATUS_SUSPENDED: return "suspended";
    case VP8_STATUS_USER_ABORT: return "aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "file is truncated";
    default: return "error";
  }
}

uint32_t le32(const uint8_t* p) { return p[0] | (p[1] << 8) | (p[2] << 16) | (uint32_t{p[3]} << 24); }

// The payload of the first RIFF chunk named `fourcc` in a WebP file.
bool webp_find_chunk(const uint8_t* data, size_t size, const char* fourcc, const uint8_t** out, size_t* n) {
  size_t pos = 12;
  while (pos + 8 <= size) {
    const uint64_t len = le32(data + pos + 4);
    if (len > size - pos - 8) return false;
    if (std::memcmp(data + pos, fourcc, 4) == 0) {
      *out = data + pos + 8;
      *n = static_cast<size_t>(len);
      return true;
    }
    pos += 8 + static_cast<size_t>(len) + (len & 1);
  }
  return false;
}

Image decode_webp(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  WebPDecoderConfig config;
  if (!WebPInitDecoderConfig(&config)) fail(name, "libwebp version mismatch");
  VP8StatusCode st = WebPGetFeatures(data, size, &config.input);
  if (st != VP8_STATUS_OK) fail(name, std::string("bad or truncated WebP: ") + webp_status(st));
  if (config.input.has_animation) fail(name, "animated WebP is not supported; export one frame as a still image");
  check_dims(name, "WebP", config.input.width, config.input.height, opt);
  Image img = blank_image(config.input.width, config.input.height);
  // RGB straight from the decoder (alpha, if any, dropped without blending).
  config.output.colorspace = MODE_RGB;
  config.output.is_external_memory = 1;
  config.output.u.RGBA.rgba = img.rgb.data();
  config.output.u.RGBA.stride = img.width * 3;
  config.output.u.RGBA.size = img.rgb.size();
  st = WebPDecode(data, size, &config);
  WebPFreeDecBuffer(&config.output);
  if (st != VP8_STATUS_OK) fail(name, std::string("bad or truncated WebP: ") + webp_status(st));
  if (opt.apply_orientation) {
    const uint8_t* exif = nullptr;
    size_t n = 0;
    if (webp_find_chunk(data, size, "EXIF", &exif, &n)) {
      int o = exif_orientation(exif, n);
      if (o != 1) return apply_exif_orientation(img, o);
    }
  }
  return img;
}

// ---------------------------------------------------------------- HEIF ----

struct HeifDeleter {
  void operator()(heif_context* p) const { heif_context_free(p); }
  void operator()(const heif_image_handle* p) const { heif_image_handle_release(p); }
  void operator()(const heif_image* p) const { heif_image_release(p); }
  void operator()(heif_decoding_options* p) const { heif_decoding_options_free(p); }
};

Image decode_heif(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  auto check = [&](heif_error e, const char* what) {
    if (e.code != heif_error_Ok)
      fail(name, std::string("bad HEIF/AVIF (") + what + "): " + (e.message ? e.message : "error"));
  };
  std::unique_ptr<heif_context, HeifDeleter> ctx(heif_context_alloc());
  if (!ctx) fail(name, "out of memory");
  check(heif_context_read_from_memory_without_copy(ctx.get(), data, size, nullptr), "reading");
  heif_image_handle* hp = nullptr;
  check(heif_context_get_primary_image_handle(ctx.get(), &hp), "primary image");
  std::unique_ptr<const heif_image_handle, HeifDeleter> handle(hp);
  check_dims(name, "HEIF", heif_image_handle_get_width(hp), heif_image_handle_get_height(hp), opt);

  std::unique_ptr<heif_decoding_options, HeifDeleter> o(heif_decoding_options_alloc());
  if (!o) fail(name, "out of memory");
  o->ignore_transformations = opt.apply_orientation ? 0 : 1;
  o->convert_hdr_to_8bit = 1;
  o->strict_decoding = 1;
  heif_image* ip = nullptr;
  check(heif_decode_image(hp, &ip, heif_colorspace_RGB, heif_chroma_interleaved_RGB, o.get()), "decoding");
  std::unique_ptr<const heif_image, HeifDeleter> im(ip);
  const int w = heif_image_get_width(ip, heif_channel_interleaved);
  const int h = heif_image_get_height(ip, heif_channel_interleaved);
  check_dims(name, "HEIF", w, h, opt);
  if (heif_image_get_bits_per_pixel_range(ip, heif_channel_interleaved) != 8)
    fail(name, "HEIF decoded to an unexpected bit depth");
  int stride = 0;
  const uint8_t* plane = heif_image_get_plane_readonly(ip, heif_channel_interleaved, &stride);
  if (!plane || stride < w * 3) fail(name, "HEIF decoder returned no pixels");
  Image img = blank_image(w, h);
  for (int y = 0; y < h; ++y)
    std::memcpy(img.pixel(0, y), plane + static_cast<size_t>(y) * stride, static_cast<size_t>(w) * 3);
  return img;
}

// ----------------------------------------------------------- detection ----

bool is_heif_brand(const uint8_t* b) {
  static const char* kBrands[] = {"heic", "heix", "hevc", "hevx", "heim", "heis",
                                  "mif1", "msf1", "mif2", "avif", "avis"};
  for (const char* k : kBrands)
    if (std::memcmp(b, k, 4) == 0) return true;
  return false;
}

// A hint for files that are not a supported image.
std::string describe_unknown(const uint8_t* d, size_t n) {
  auto starts = [&](const char* s, size_t off = 0) {
    size_t l = std::strlen(s);
    return n >= off + l && std::memcmp(d + off, s, l) == 0;
  };
  if (starts("GIF87a") || starts("GIF89a")) return "a GIF image (convert it to PNG or JPEG)";
  if (starts("BM")) return "a BMP image (convert it to PNG or JPEG)";
  if (starts("II*\0") || starts("MM\0*")) return "a TIFF image (convert it to PNG or JPEG)";
  if (starts("%PDF")) return "a PDF document";
  if (starts("ftyp", 4)) return "an ISO media file that is not a HEIF/AVIF image (a video?)";
  if (starts("RIFF")) return "a RIFF file that is not WebP";
  if (starts("\x89PNG")) return "a damaged PNG signature";
  size_t printable = 0, m = n < 64 ? n : 64;
  for (size_t i = 0; i < m; ++i)
    if ((d[i] >= 32 && d[i] < 127) || d[i] == '\n' || d[i] == '\r' || d[i] == '\t') ++printable;
  if (m > 0 && printable == m) return "text";
  return "unknown data";
}

}  // namespace

const char* format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::Jpeg: return "JPEG";
    case ImageFormat::Png: return "PNG";
    case ImageFormat::Webp: return "WebP";
    case ImageFormat::Heif: return "HEIF";
    default: return "unknown";
  }
}

ImageFormat detect_image_format(const uint8_t* d, size_t n) {
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageFormat::Jpeg;
  if (n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) return ImageFormat::Png;
  if (n >= 12 && std::memcmp(d, "RIFF", 4) == 0 && std::memcmp(d + 8, "WEBP", 4) == 0) return ImageFormat::Webp;
  if (n >= 12 && std::memcmp(d + 4, "ftyp", 4) == 0) {
    if (is_heif_brand(d + 8)) return ImageFormat::Heif;
    // Major brand generic (e.g. "isom"): look through the compatible brands.
    const uint64_t box = (uint64_t{d[0]} << 24) | (d[1] << 16) | (d[2] << 8) | d[3];
    const size_t end = static_cast<size_t>(box < n ? box : n);
    for (size_t p = 16; p + 4 <= end; p += 4)
      if (is_heif_brand(d + p)) return ImageFormat::Heif;
  }
  return ImageFormat::Unknown;
}

Image decode_image_memory(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt) {
  if (size == 0 || data == nullptr) fail(name, "empty file, not an image");
  switch (detect_image_format(data, size)) {
    case ImageFormat::Jpeg: return decode_jpeg(data, size, name, opt);
    case ImageFormat::Png: return decode_png(data, size, name, opt);
    case ImageFormat::Webp: return decode_webp(data, size, name, opt);
    case ImageFormat::Heif: return decode_heif(data, size, name, opt);
    default: break;
  }
  fail(name, "not a supported image (JPEG, PNG, WebP, HEIF/HEIC/AVIF): the file looks like " +
                 describe_unknown(data, size));
}

Image decode_image(const std::string& path, const DecodeOptions& opt) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, "no such file");
  if (!fs::is_regular_file(st)) fail(path, "not a regular file");
  const uint64_t n = fs::file_size(path, ec);
  if (ec) fail(path, "cannot read file size: " + ec.message());
  if (n > kMaxFileBytes) fail(path, "file is " + std::to_string(n >> 20) + " MiB, too large for an image");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, "cannot open file");
  std::vector<uint8_t> buf(static_cast<size_t>(n));
  if (n && !f.read(reinterpret_cast<char*>(buf.data()), static_cast<std::streamsize>(n)))
    fail(path, "read error");
  return decode_image_memory(buf.data(), buf.size(), path, opt);
}

Image apply_exif_orientation(const Image& img, int o) {
  if (o < 2 || o > 8) return img;
  const int W = img.width, H = img.height;
  const bool swap = o >= 5;
  Image out = blank_image(swap ? H : W, swap ? W : H);
  for (int y = 0; y < out.height; ++y) {
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (o) {
        case 2: sx = W - 1 - x; sy = y; break;          // mirror horizontally
        case 3: sx = W - 1 - x; sy = H - 1 - y; break;  // rotate 180
        case 4: sx = x; sy = H - 1 - y; break;          // mirror vertically
        case 5: sx = y; sy = x; break;                  // transpose
        case 6: sx = y; sy = H - 1 - x; break;          // rotate 90 clockwise
        case 7: sx = W - 1 - y; sy = H - 1 - x; break;  // transverse
        case 8: sx = W - 1 - y; sy = x; break;          // rotate 90 counter-clockwise
      }
      std::memcpy(out.pixel(x, y), img.pixel(sx, sy), 3);
    }
  }
  return out;
}

// ------------------------------------------------------------- encoding ----

namespace {

void check_encodable(const Image& img, const char* what) {
  if (img.width <= 0 || img.height <= 0 || img.rgb.size() != static_cast<size_t>(img.width) * img.height * 3)
    throw Error(std::string(what) + ": empty or inconsistent image (" + dims_str(img.width, img.height) + ")");
  if (img.width > 65500 || img.height > 65500)
    throw Error(std::string(what) + ": image too large to encode (" + dims_str(img.width, img.height) + ")");
}

struct JpegEncodeCtx {
  jpeg_compress_struct cinfo{};
  JpegErr err{};
  bool created = false;
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  ~JpegEncodeCtx() {
    if (created) jpeg_destroy_compress(&cinfo);
    std::free(buf);
  }
};

bool jpeg_encode_impl(JpegEncodeCtx* ctx, const Image* img, int quality) {
  j_compress_ptr cinfo = &ctx->cinfo;
  cinfo->err = &ctx->err.pub;
  init_jpeg_err(ctx->err);
  if (setjmp(ctx->err.jb)) return false;
  jpeg_create_compress(cinfo);
  ctx->created = true;
  jpeg_mem_dest(cinfo, &ctx->buf, &ctx->size);
  cinfo->image_width = static_cast<JDIMENSION>(img->width);
  cinfo->image_height = static_cast<JDIMENSION>(img->height);
  cinfo->input_components = 3;
  cinfo->in_color_space = JCS_RGB;
  jpeg_set_defaults(cinfo);  // writes only a JFIF APP0 (version, density): no metadata
  jpeg_set_quality(cinfo, quality, TRUE);
  cinfo->optimize_coding = TRUE;
  // 4:4:4: no chroma subsampling, colour detail of lesions is kept.
  for (int c = 0; c < cinfo->num_components; ++c) {
    cinfo->comp_info[c].h_samp_factor = 1;
    cinfo->comp_info[c].v_samp_factor = 1;
  }
  jpeg_start_compress(cinfo, TRUE);
  while (cinfo->next_scanline < cinfo->image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(img->pixel(0, static_cast<int>(cinfo->next_scanline)));
    jpeg_write_scanlines(cinfo, &row, 1);
  }
  jpeg_finish_compress(cinfo);
  return true;
}

struct PngEncodeCtx {
  png_structp png = nullptr;
  png_infop info = nullptr;
  char msg[256] = {0};
  std::vector<uint8_t> out;
  std::vector<png_bytep> rows;
  ~PngEncodeCtx() {
    if (png) png_destroy_write_struct(&png, info ? &info : nullptr);
  }
};

extern "C" void sg_png_enc_error(png_structp png, png_const_charp msg) {
  auto* ctx = static_cast<PngEncodeCtx*>(png_get_error_ptr(png));
  std::snprintf(ctx->msg, sizeof ctx->msg, "%s", msg ? msg : "error");
  png_longjmp(png, 1);
}

extern "C" void sg_png_write(png_structp png, png_bytep data, size_t n) {
  auto* ctx = static_cast<PngEncodeCtx*>(png_get_io_ptr(png));
  try {
    ctx->out.insert(ctx->out.end(), data, data + n);
  } catch (...) {
    png_error(png, "out of memory");
  }
}
extern "C" void sg_png_flush(png_structp) {}

bool png_encode_impl(PngEncodeCtx* ctx, const Image* img) {
  ctx->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, sg_png_enc_error, sg_png_warning);
  if (!ctx->png) return false;
  ctx->info = png_create_info_struct(ctx->png);
  if (!ctx->info) return false;
  if (setjmp(png_jmpbuf(ctx->png))) return false;
  png_set_write_fn(ctx->png, ctx, sg_png_write, sg_png_flush);
  png_set_IHDR(ctx->png, ctx->info, static_cast<png_uint_32>(img->width), static_cast<png_uint_32>(img->height),
               8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(ctx->png, ctx->info);
  png_write_image(ctx->png, ctx->rows.data());
  png_write_end(ctx->png, nullptr);
  return true;
}

}  // namespace

std::vector<uint8_t> encode_jpeg(const Image& img, int quality) {
  check_encodable(img, "JPEG encoder");
  if (quality < 1 || quality > 100) throw Error("JPEG encoder: quality must be 1..100, got " + std::to_string(quality));
  auto ctx = std::make_unique<JpegEncodeCtx>();
  if (!jpeg_encode_impl(ctx.get(), &img, quality)) throw Error(std::string("JPEG encoder: ") + ctx->err.msg);
  return std::vector<uint8_t>(ctx->buf, ctx->buf + ctx->size);
}

std::vector<uint8_t> encode_png(const Image& img) {
  check_encodable(img, "PNG encoder");
  auto ctx = std::make_unique<PngEncodeCtx>();
  ctx->rows.resize(img.height);
  for (int y = 0; y < img.height; ++y) ctx->rows[y] = const_cast<png_bytep>(img.pixel(0, y));
  ctx->out.reserve(img.rgb.size() / 2 + 1024);
  if (!png_encode_impl(ctx.get(), &img)) throw Error(std::string("PNG encoder: ") + (ctx->msg[0] ? ctx->msg : "out of memory"));
  return std::move(ctx->out);
}

}  // namespace sg
