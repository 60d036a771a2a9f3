#include "formats/zip.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "core/error.h"

namespace sg {

namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEocdSig = 0x06054b50,
                   kEocd64Sig = 0x06064b50, kEocd64LocSig = 0x07064b50;
constexpr uint64_t kEocdSize = 22, kEocd64LocSize = 20, kEocd64MinSize = 56, kCentralSize = 46,
                   kLocalSize = 30;

uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t u32(const uint8_t* p) { return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                                        static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24; }
uint64_t u64(const uint8_t* p) { return static_cast<uint64_t>(u32(p)) | static_cast<uint64_t>(u32(p + 4)) << 32; }

std::array<uint32_t, 256> make_crc_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}

}  // namespace

uint32_t crc32(const uint8_t* data, uint64_t n, uint32_t crc) {
  static const auto table = make_crc_table();
  crc = ~crc;
  for (uint64_t i = 0; i < n; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

void ZipReader::fail(const std::string& problem) const { throw Error(name_ + ": " + problem); }

ZipReader::ZipReader(const uint8_t* data, uint64_t size, std::string name)
    : data_(data), size_(size), name_(std::move(name)) {
  if (size_ < kEocdSize) fail("not a zip archive (" + std::to_string(size_) + " bytes, too short)");
  // The end-of-central-directory record is in the last 22 + 65535 bytes.
  const uint64_t lowest = size_ > kEocdSize + 0xFFFF ? size_ - kEocdSize - 0xFFFF : 0;
  uint64_t eocd = UINT64_MAX;
  for (uint64_t p = size_ - kEocdSize + 1; p-- > lowest;) {
    if (u32(data_ + p) == kEocdSig && p + kEocdSize + u16(data_ + p + 20) <= size_) {
      eocd = p;
      break;
    }
  }
  if (eocd == UINT64_MAX)
    fail("not a zip archive or truncated (no end-of-central-directory record; a PyTorch checkpoint is a zip file)");
  const uint8_t* e = data_ + eocd;
  uint64_t n_entries = u16(e + 10), cd_size = u32(e + 12), cd_offset = u32(e + 16);
  const uint16_t disk = u16(e + 4), cd_disk = u16(e + 6);
  uint64_t cd_limit = eocd;  // the central directory ends before this
  // ZIP64: a locator sits right before the EOCD record.
  if (eocd >= kEocd64LocSize && u32(data_ + eocd - kEocd64LocSize) == kEocd64LocSig) {
    const uint8_t* loc = data_ + eocd - kEocd64LocSize;
    const uint64_t rec = u64(loc + 8);
    if (u32(loc + 16) > 1) fail("multi-disk (split) zip archives are not supported");
    if (rec > eocd - kEocd64LocSize || eocd - kEocd64LocSize - rec < kEocd64MinSize)
      fail("ZIP64 end-of-central-directory locator points outside the archive");
    const uint8_t* r = data_ + rec;
    if (u32(r) != kEocd64Sig) fail("ZIP64 end-of-central-directory record is missing or corrupt");
    if (u32(r + 16) != 0 || u32(r + 20) != 0) fail("multi-disk (split) zip archives are not supported");
    n_entries = u64(r + 32);
    cd_size = u64(r + 40);
    cd_offset = u64(r + 48);
    cd_limit = rec;
  } else {
    if (disk != 0 || cd_disk != 0) fail("multi-disk (split) zip archives are not supported");
    if (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_offset == 0xFFFFFFFFu)
      fail("ZIP64 archive without its ZIP64 end-of-central-directory locator (truncated?)");
  }
  if (cd_offset > cd_limit || cd_size > cd_limit - cd_offset)
    fail("central directory (offset " + std::to_string(cd_offset) + ", " + std::to_string(cd_size) +
         " bytes) lies outside the archive (truncated?)");
  if (n_entries > kMaxMembers) fail("too many members (" + std::to_string(n_entries) + ")");
  if (n_entries > cd_size / kCentralSize) fail("central directory is too small for its " +
                                               std::to_string(n_entries) + " members");
  members_.reserve(static_cast<size_t>(n_entries));
  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < n_entries; ++i) {
    if (cd_end - p < kCentralSize) fail("central directory entry " + std::to_string(i) + " is truncated");
    const uint8_t* c = data_ + p;
    if (u32(c) != kCentralSig) fail("central directory entry " + std::to_string(i) + " has a bad signature");
    ZipMember m;
    m.flags = u16(c + 8);
    m.method = u16(c + 10);
    m.crc32 = u32(c + 16);
    m.compressed_size = u32(c + 20);
    m.size = u32(c + 24);
    const uint64_t name_len = u16(c + 28), extra_len = u16(c + 30), comment_len = u16(c + 32);
    const uint16_t disk_start = u16(c + 34);
    m.header_offset = u32(c + 42);
    if (cd_end - p - kCentralSize < name_len + extra_len + comment_len)
      fail("central directory entry " + std::to_string(i) + " is truncated");
    m.name.assign(reinterpret_cast<const char*>(c + kCentralSize), name_len);
    // ZIP64 extended information: 8-byte values for the fields saturated at 0xFFFFFFFF, in order.
    const bool need64 = m.size == 0xFFFFFFFFu || m.compressed_size == 0xFFFFFFFFu ||
                        m.header_offset == 0xFFFFFFFFu || disk_start == 0xFFFF;
    const uint8_t* x = c + kCentralSize + name_len;
    uint64_t xl = extra_len;
    bool got64 = false;
    while (xl >= 4) {
      const uint16_t id = u16(x), len = u16(x + 2);
      if (len > xl - 4) fail("member '" + m.name + "' has a corrupt extra field");
      if (id == 0x0001 && need64) {
        const uint8_t* f = x + 4;
        uint64_t left = len;
        auto take = [&](uint64_t& v) {
          if (left < 8) fail("member '" + m.name + "' has a truncated ZIP64 extra field");
          v = u64(f);
          f += 8;
          left -= 8;
        };
        if (m.size == 0xFFFFFFFFu) take(m.size);
        if (m.compressed_size == 0xFFFFFFFFu) take(m.compressed_size);
        if (m.header_offset == 0xFFFFFFFFu) take(m.header_offset);
        got64 = true;
      }
      x += 4 + len;
      xl -= 4 + len;
    }
    if (need64 && !got64) fail("member '" + m.name + "' needs a ZIP64 extra field but has none");
    p += kCentralSize + name_len + extra_len + comment_len;

    // The local header: its own name and extra lengths decide where the data starts.
    if (m.header_offset > size_ || size_ - m.header_offset < kLocalSize)
      fail("member '" + m.name + "' has its local header outside the archive (truncated?)");
    const uint8_t* l = data_ + m.header_offset;
    if (u32(l) != kLocalSig) fail("member '" + m.name + "' has a bad local header signature");
    const uint64_t lname = u16(l + 26), lextra = u16(l + 28);
    const uint64_t start = m.header_offset + kLocalSize + lname + lextra;
    if (start > size_) fail("member '" + m.name + "' starts past the end of the archive (truncated?)");
    if (lname != name_len || std::memcmp(l + kLocalSize, c + kCentralSize, name_len) != 0)
      fail("member '" + m.name + "': local and central names differ");
    if (m.compressed_size > size_ - start)
      fail("member '" + m.name + "' (" + std::to_string(m.compressed_size) + " bytes at offset " +
           std::to_string(start) + ") extends past the end of the archive (" + std::to_string(size_) +
           " bytes; truncated?)");
    m.data_offset = start;
    if (index_.count(m.name)) fail("member '" + m.name + "' appears twice");
    index_.emplace(m.name, members_.size());
    members_.push_back(std::move(m));
  }
}

const ZipMember* ZipReader::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &members_[it->second];
}

const uint8_t* ZipReader::stored_data(const ZipMember& m) const {
  if (m.flags & 1) fail("member '" + m.name + "' is encrypted");
  if (m.method != 0)
    fail("member '" + m.name + "' is compressed (method " + std::to_string(m.method) +
         (m.method == 8 ? ", deflate" : "") +
         "); torch.save writes uncompressed members — re-save the checkpoint with torch.save, or re-zip it "
         "without compression (zip -0)");
  if (m.size != m.compressed_size)
    fail("member '" + m.name + "' is stored but its sizes differ (" + std::to_string(m.size) + " vs " +
         std::to_string(m.compressed_size) + ")");
  return data_ + m.data_offset;
}

bool ZipReader::crc_ok(const ZipMember& m) const {
  return crc32(stored_data(m), m.size) == m.crc32;
}

}  // namespace sg
