// A reader for the zip archives torch.save writes (PKWARE APPNOTE): the
// central directory, including ZIP64 (a 13B pytorch_model.bin shard can exceed
// 4 GB), over caller-owned bytes (usually a MappedFile). Members are handed out
// zero-copy; only stored (uncompressed) members can be read — torch.save never
// compresses. Untrusted input: every offset and length is checked against the
// archive size, and failures throw sg::Error "<name>: <problem>".
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace sg {

struct ZipMember {
  std::string name;
  uint16_t method = 0;       // 0 stored, 8 deflate, ...
  uint16_t flags = 0;        // bit 0: encrypted
  uint32_t crc32 = 0;
  uint64_t size = 0;         // uncompressed
  uint64_t compressed_size = 0;
  uint64_t header_offset = 0;  // local header
  uint64_t data_offset = 0;    // first byte of the member's data
};

class ZipReader {
 public:
  static constexpr uint64_t kMaxMembers = 1u << 20;

  // Parses the end-of-central-directory record(s) and the central directory,
  // and checks every member's local header.
  ZipReader(const uint8_t* data, uint64_t size, std::string name);

  const std::vector<ZipMember>& members() const { return members_; }
  const ZipMember* find(std::string_view name) const;
  // Pointer to a stored member's bytes; throws for compressed or encrypted
  // members with a message saying how to fix the file.
  const uint8_t* stored_data(const ZipMember& m) const;
  // Whether the member's bytes have the CRC-32 its directory entry records.
  bool crc_ok(const ZipMember& m) const;
  const std::string& name() const { return name_; }

 private:
  [[noreturn]] void fail(const std::string& problem) const;
  const uint8_t* data_;
  uint64_t size_;
  std::string name_;
  std::vector<ZipMember> members_;
  std::map<std::string, size_t, std::less<>> index_;
};

uint32_t crc32(const uint8_t* data, uint64_t n, uint32_t crc = 0);

}  // namespace sg
