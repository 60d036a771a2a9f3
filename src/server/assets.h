// The web app's files (web/), compiled into the binary at build time by
// src/server/embed_assets.cmake. The server serves these and nothing else:
// there is no path from a URL to the filesystem.
#pragma once
#include <cstddef>
#include <span>
#include <string_view>

namespace sg::server {

struct Asset {
  const char* path;          // "/index.html", "/app.js", "/style.css", "/print.css"
  const char* content_type;
  const unsigned char* data;
  size_t size;
};

const Asset* find_asset(std::string_view path);
std::span<const Asset> all_assets();

}  // namespace sg::server
