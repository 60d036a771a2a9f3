#include "server/util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cctype>
#include <cstring>
#include <ctime>

#include "core/error.h"

namespace sg::server {

namespace {
int b64_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}
}  // namespace

std::optional<std::vector<uint8_t>> base64_decode(std::string_view in, size_t max_bytes) {
  if (in.size() / 4 * 3 > max_bytes + 3) return std::nullopt;
  std::vector<uint8_t> out;
  out.reserve(in.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0, pad = 0;
  for (unsigned char c : in) {
    if (c == '\r' || c == '\n') continue;
    if (c == '=') {
      ++pad;
      continue;
    }
    if (pad) return std::nullopt;  // data after padding
    const int v = b64_value(c);
    if (v < 0) return std::nullopt;
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<uint8_t>((acc >> bits) & 0xff));
    }
  }
  if (pad > 2 || bits >= 6) return std::nullopt;  // a lone 6-bit group is not a byte
  if (out.size() > max_bytes) return std::nullopt;
  return out;
}

std::string base64_encode(const uint8_t* d, size_t n) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string o;
  o.reserve((n + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < n; i += 3) {
    const uint32_t v = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
    o += k[v >> 18];
    o += k[(v >> 12) & 63];
    o += k[(v >> 6) & 63];
    o += k[v & 63];
  }
  if (i + 1 == n) {
    const uint32_t v = d[i] << 16;
    o += k[v >> 18];
    o += k[(v >> 12) & 63];
    o += "==";
  } else if (i + 2 == n) {
    const uint32_t v = (d[i] << 16) | (d[i + 1] << 8);
    o += k[v >> 18];
    o += k[(v >> 12) & 63];
    o += k[(v >> 6) & 63];
    o += '=';
  }
  return o;
}

std::optional<DataUri> parse_data_uri(std::string_view uri, size_t max_bytes, std::string* error, bool* too_large) {
  *too_large = false;
  auto fail = [&](const std::string& m) -> std::optional<DataUri> {
    *error = m;
    return std::nullopt;
  };
  if (uri.substr(0, 5) != "data:") return fail("image_url must be a data: URI");
  const size_t comma = uri.find(',');
  if (comma == std::string_view::npos || comma > 200) return fail("malformed data: URI (no ',' after the media type)");
  std::string_view head = uri.substr(5, comma - 5);
  const std::string_view payload = uri.substr(comma + 1);
  constexpr std::string_view suffix = ";base64";
  if (head.size() < suffix.size() || head.substr(head.size() - suffix.size()) != suffix)
    return fail("data: URI must be base64-encoded (data:image/jpeg;base64,...)");
  head.remove_suffix(suffix.size());
  DataUri d;
  d.media_type = std::string(head);
  for (auto& c : d.media_type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (d.media_type != "image/jpeg" && d.media_type != "image/jpg" && d.media_type != "image/png" &&
      d.media_type != "image/webp")
    return fail("unsupported image type '" + d.media_type + "': use image/jpeg, image/png or image/webp");
  if (payload.size() / 4 * 3 > max_bytes + 3) {
    *too_large = true;
    return fail("image is larger than the upload limit of " + std::to_string(max_bytes >> 20) + " MiB");
  }
  auto bytes = base64_decode(payload, max_bytes);
  if (!bytes) return fail("data: URI payload is not valid base64");
  if (bytes->empty()) return fail("data: URI holds no image");
  d.bytes = std::move(*bytes);
  return d;
}

std::string random_id() {
  uint8_t b[16];
  size_t got = 0;
  while (got < sizeof b) {
    const ssize_t n = getrandom(b + got, sizeof b - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("getrandom failed: ") + std::strerror(errno));
    }
    got += static_cast<size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (uint8_t x : b) {
    s += hex[x >> 4];
    s += hex[x & 15];
  }
  return s;
}

bool is_case_id(std::string_view s) {
  if (s.size() != 32) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

bool constant_time_equal(std::string_view given, std::string_view expected) {
  volatile unsigned char diff = given.size() == expected.size() ? 0 : 1;
  for (size_t i = 0; i < expected.size(); ++i) {
    const unsigned char g = i < given.size() ? static_cast<unsigned char>(given[i]) : 0;
    diff = diff | (g ^ static_cast<unsigned char>(expected[i]));
  }
  return diff == 0;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n;
    uint32_t cp;
    if (c < 0x80) { ++i; continue; }
    else if ((c & 0xe0) == 0xc0) { n = 1; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { n = 2; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { n = 3; cp = c & 0x07; }
    else return false;
    if (i + static_cast<size_t>(n) >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

bool is_loopback_host(const std::string& host) {
  if (host == "localhost") return true;
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

}  // namespace sg::server
