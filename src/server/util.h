// Small helpers of the HTTP layer: base64, data: URIs, random case ids,
// constant-time comparison, UTF-8 checks. No model, no HTTP.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sg::server {

// Strict base64 (standard alphabet, optional '=' padding, no whitespace other
// than CR/LF which are skipped). nullopt on any other character or a
// truncated final group; refuses before decoding when the output would pass
// `max_bytes`.
std::optional<std::vector<uint8_t>> base64_decode(std::string_view in, size_t max_bytes);
std::string base64_encode(const uint8_t* data, size_t size);

// "data:image/png;base64,AAAA" → its media type and payload. Errors are
// returned as text (for a 400); `too_large` is set when the payload passes
// max_bytes (for a 413).
struct DataUri {
  std::string media_type;
  std::vector<uint8_t> bytes;
};
std::optional<DataUri> parse_data_uri(std::string_view uri, size_t max_bytes, std::string* error, bool* too_large);

// 32 lowercase hex digits from the kernel's random source (unguessable ids).
std::string random_id();
bool is_case_id(std::string_view s);

// Compares a secret without an early exit: the time depends only on the
// length of `expected`, never on where `given` first differs.
bool constant_time_equal(std::string_view given, std::string_view expected);

bool valid_utf8(std::string_view s);

// Loopback: 127.0.0.0/8, ::1, "localhost".
bool is_loopback_host(const std::string& host);

}  // namespace sg::server
