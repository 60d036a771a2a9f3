#include "formats/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace sg {

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  std::shared_ptr<MappedFile> m(new MappedFile());
  m->path_ = path;
  m->size_ = static_cast<uint64_t>(st.st_size);
  if (m->size_ > 0) {
    void* p = ::mmap(nullptr, m->size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw Error(path + ": cannot map " + std::to_string(m->size_) + " bytes: " + std::strerror(e));
    }
    m->data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);
  return m;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

namespace {
// The whole pages inside [p, p+n) of the mapping [base, base+size).
bool inner_pages(const uint8_t* base, uint64_t size, const void* p, uint64_t n, uintptr_t& lo, uintptr_t& hi) {
  const auto b = reinterpret_cast<uintptr_t>(base), q = reinterpret_cast<uintptr_t>(p);
  if (!base || q < b || q - b > size || n > size - (q - b)) return false;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  lo = (q + page - 1) / page * page;
  hi = (q + n) / page * page;
  return hi > lo;
}
}  // namespace

void MappedFile::release(const void* p, uint64_t n) const {
  uintptr_t lo, hi;
  if (inner_pages(data_, size_, p, n, lo, hi)) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

void release_pages(const void* p, uint64_t n) {
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto q = reinterpret_cast<uintptr_t>(p);
  const uintptr_t lo = (q + page - 1) / page * page, hi = (q + n) / page * page;
  if (p && hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
}

void MappedFile::will_need(const void* p, uint64_t n) const {
  const auto b = reinterpret_cast<uintptr_t>(data_), q = reinterpret_cast<uintptr_t>(p);
  if (!data_ || n == 0 || q < b || q - b >= size_) return;
  static const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t lo = q / page * page, hi = q + std::min<uint64_t>(n, size_ - (q - b));
  ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_WILLNEED);
}

}  // namespace sg
