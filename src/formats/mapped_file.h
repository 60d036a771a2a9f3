// A whole file mapped read-only, shared by every tensor that points into it.
// Converting a 13B model reads every byte once; release() drops the pages a
// converter has finished with from this process (they stay in the page cache),
// so the resident set stays small however large the input is.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

namespace sg {

class MappedFile {
 public:
  // Throws sg::Error "<path>: <problem>" if the file cannot be opened or mapped.
  static std::shared_ptr<const MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::string& path() const { return path_; }
  const uint8_t* data() const { return data_; }
  uint64_t size() const { return size_; }
  // madvise(MADV_DONTNEED) on the whole pages inside [p, p + n); p must lie in
  // this mapping (otherwise nothing happens). Later reads fault the pages back in.
  void release(const void* p, uint64_t n) const;
  // Tells the kernel these bytes will be read soon, in order.
  void will_need(const void* p, uint64_t n) const;

 private:
  MappedFile() = default;
  std::string path_;
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
};

// madvise(MADV_DONTNEED) on the whole pages inside [p, p + n) of any
// read-only file mapping (for mappings owned elsewhere, e.g. gguf::File).
void release_pages(const void* p, uint64_t n);

}  // namespace sg
