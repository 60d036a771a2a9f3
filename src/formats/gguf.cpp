// GGUF v2/v3 reader and streaming v3 writer. See gguf.h and docs/gguf-reader.md.
#include "formats/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>

#include "core/error.h"

static_assert(std::endian::native == std::endian::little, "GGUF I/O assumes a little-endian host");

namespace sg::gguf {

namespace {

constexpr char kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint64_t kHeaderBytes = 4 + 4 + 8 + 8;
// Smallest possible encodings, used to bound counts before looping/allocating.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;               // empty key, type, u8 value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 8 + 4 + 8;  // empty name, 1 dim

// Byte size of a fixed-size scalar value type; 0 for STRING/ARRAY/unknown.
uint64_t scalar_size(uint32_t t) {
  switch (static_cast<ValueType>(t)) {
    case ValueType::U8: case ValueType::I8: case ValueType::BOOL: return 1;
    case ValueType::U16: case ValueType::I16: return 2;
    case ValueType::U32: case ValueType::I32: case ValueType::F32: return 4;
    case ValueType::U64: case ValueType::I64: case ValueType::F64: return 8;
    default: return 0;
  }
}
bool is_unsigned(ValueType t) {
  return t == ValueType::U8 || t == ValueType::U16 || t == ValueType::U32 || t == ValueType::U64;
}
bool is_signed(ValueType t) {
  return t == ValueType::I8 || t == ValueType::I16 || t == ValueType::I32 || t == ValueType::I64;
}
bool is_integer(ValueType t) { return is_unsigned(t) || is_signed(t); }
bool is_float(ValueType t) { return t == ValueType::F32 || t == ValueType::F64; }
bool known_type(uint32_t t) { return t <= static_cast<uint32_t>(ValueType::F64); }

std::string value_type_desc(const Value& v) {
  if (v.type == ValueType::ARRAY) return "array of " + type_name(v.elem_type);
  return type_name(v.type);
}

// A name from the file (or the caller) for an error message: single-quoted,
// control bytes, quotes and backslashes shown as \xNN so the message stays
// one unambiguous line, and cut after 96 bytes.
std::string quoted(std::string_view s) {
  static const char* hex = "0123456789abcdef";
  std::string out = "'";
  const size_t n = std::min<size_t>(s.size(), 96);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char ch = static_cast<unsigned char>(s[i]);
    if (ch < 0x20 || ch == 0x7f || ch == '\'' || ch == '\\') {
      out += "\\x";
      out += hex[ch >> 4];
      out += hex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  if (s.size() > n) out += "...";
  return out + "'";
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }  // caller avoids overflow

bool valid_alignment(uint64_t a) {
  return a >= kMinAlignment && a <= kMaxAlignment && std::has_single_bit(a);
}

std::string alignment_problem(uint64_t a) {
  return "general.alignment " + std::to_string(a) + " is not supported (must be a power of two from " +
         std::to_string(kMinAlignment) + " to " + std::to_string(kMaxAlignment) + ")";
}

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t size, const std::string& path) : p_(p), size_(size), path_(path) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(const std::string& problem) const { throw Error(path_ + ": " + problem); }

  void need(uint64_t n, const std::string& what) const {
    if (n > remaining())
      fail("truncated: " + what + " at offset " + std::to_string(pos_) + " needs " + std::to_string(n) +
           " bytes, only " + std::to_string(remaining()) + " left");
  }
  template <typename T>
  T get(const std::string& what) {
    need(sizeof(T), what);
    T x;
    std::memcpy(&x, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return x;
  }
  std::string str(const std::string& what) {
    uint64_t n = get<uint64_t>(what + " length");
    if (n > remaining())
      fail(what + " has length " + std::to_string(n) + " at offset " + std::to_string(pos_ - 8) +
           ", more than the " + std::to_string(remaining()) + " bytes left in the file");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), n);
    pos_ += n;
    return s;
  }

 private:
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  const std::string& path_;
};

// Reads one scalar of fixed-size type t widened into the matching alternative.
uint64_t read_unsigned(Cursor& c, ValueType t, const std::string& what) {
  switch (t) {
    case ValueType::U8: return c.get<uint8_t>(what);
    case ValueType::U16: return c.get<uint16_t>(what);
    case ValueType::U32: return c.get<uint32_t>(what);
    default: return c.get<uint64_t>(what);
  }
}
int64_t read_signed(Cursor& c, ValueType t, const std::string& what) {
  switch (t) {
    case ValueType::I8: return c.get<int8_t>(what);
    case ValueType::I16: return c.get<int16_t>(what);
    case ValueType::I32: return c.get<int32_t>(what);
    default: return c.get<int64_t>(what);
  }
}
double read_floating(Cursor& c, ValueType t, const std::string& what) {
  if (t == ValueType::F32) return c.get<float>(what);
  return c.get<double>(what);
}
bool read_bool(Cursor& c, const std::string& what) {
  uint8_t b = c.get<uint8_t>(what);
  if (b > 1) c.fail(what + " is a bool with invalid byte value " + std::to_string(b));
  return b != 0;
}

Value read_value(Cursor& c, uint32_t raw_type, const std::string& key) {
  const std::string what = "metadata key " + quoted(key);
  if (!known_type(raw_type)) c.fail(what + " has unknown value type " + std::to_string(raw_type));
  Value v;
  v.type = static_cast<ValueType>(raw_type);
  if (is_unsigned(v.type)) {
    v.v = read_unsigned(c, v.type, what);
  } else if (is_signed(v.type)) {
    v.v = read_signed(c, v.type, what);
  } else if (is_float(v.type)) {
    v.v = read_floating(c, v.type, what);
  } else if (v.type == ValueType::BOOL) {
    v.v = read_bool(c, what);
  } else if (v.type == ValueType::STRING) {
    v.v = c.str(what);
  } else {  // ARRAY
    uint32_t et = c.get<uint32_t>(what + " array element type");
    if (et == static_cast<uint32_t>(ValueType::ARRAY))
      c.fail(what + " is a nested array (arrays of arrays are not supported)");
    if (!known_type(et)) c.fail(what + " has unknown array element type " + std::to_string(et));
    v.elem_type = static_cast<ValueType>(et);
    uint64_t n = c.get<uint64_t>(what + " array length");
    // Every element takes at least this many bytes; bound the count by what is
    // left before looping or allocating anything.
    uint64_t min_elem = v.elem_type == ValueType::STRING ? 8 : scalar_size(et);
    if (n > c.remaining() / min_elem)
      c.fail(what + " is an array of " + std::to_string(n) + " " + type_name(v.elem_type) +
             " elements, more than the " + std::to_string(c.remaining()) + " bytes left in the file can hold");
    const std::string ew = what + " array element";
    if (is_unsigned(v.elem_type)) {
      std::vector<uint64_t> a(n);
      for (auto& x : a) x = read_unsigned(c, v.elem_type, ew);
      v.v = std::move(a);
    } else if (is_signed(v.elem_type)) {
      std::vector<int64_t> a(n);
      for (auto& x : a) x = read_signed(c, v.elem_type, ew);
      v.v = std::move(a);
    } else if (is_float(v.elem_type)) {
      std::vector<double> a(n);
      for (auto& x : a) x = read_floating(c, v.elem_type, ew);
      v.v = std::move(a);
    } else if (v.elem_type == ValueType::BOOL) {
      std::vector<bool> a(n);
      for (uint64_t i = 0; i < n; ++i) a[i] = read_bool(c, ew);
      v.v = std::move(a);
    } else {  // STRING
      std::vector<std::string> a;
      a.reserve(n);  // bounded above: n <= remaining / 8
      for (uint64_t i = 0; i < n; ++i) a.push_back(c.str(ew));
      v.v = std::move(a);
    }
  }
  return v;
}

}  // namespace

std::string type_name(ValueType t) {
  switch (t) {
    case ValueType::U8: return "u8";
    case ValueType::I8: return "i8";
    case ValueType::U16: return "u16";
    case ValueType::I16: return "i16";
    case ValueType::U32: return "u32";
    case ValueType::I32: return "i32";
    case ValueType::F32: return "f32";
    case ValueType::BOOL: return "bool";
    case ValueType::STRING: return "string";
    case ValueType::ARRAY: return "array";
    case ValueType::U64: return "u64";
    case ValueType::I64: return "i64";
    case ValueType::F64: return "f64";
  }
  return "type " + std::to_string(static_cast<uint32_t>(t));
}

// ---------------------------------------------------------------- Value

Value Value::u8(uint8_t x) { return Value{ValueType::U8, ValueType::U32, uint64_t{x}}; }
Value Value::i8(int8_t x) { return Value{ValueType::I8, ValueType::U32, int64_t{x}}; }
Value Value::u16(uint16_t x) { return Value{ValueType::U16, ValueType::U32, uint64_t{x}}; }
Value Value::i16(int16_t x) { return Value{ValueType::I16, ValueType::U32, int64_t{x}}; }
Value Value::u32(uint32_t x) { return Value{ValueType::U32, ValueType::U32, uint64_t{x}}; }
Value Value::i32(int32_t x) { return Value{ValueType::I32, ValueType::U32, int64_t{x}}; }
Value Value::u64(uint64_t x) { return Value{ValueType::U64, ValueType::U32, uint64_t{x}}; }
Value Value::i64(int64_t x) { return Value{ValueType::I64, ValueType::U32, int64_t{x}}; }
Value Value::f32(float x) { return Value{ValueType::F32, ValueType::U32, double{x}}; }
Value Value::f64(double x) { return Value{ValueType::F64, ValueType::U32, x}; }
Value Value::boolean(bool x) { return Value{ValueType::BOOL, ValueType::U32, x}; }
Value Value::str(std::string s) { return Value{ValueType::STRING, ValueType::U32, std::move(s)}; }
Value Value::arr_str(std::vector<std::string> s) {
  return Value{ValueType::ARRAY, ValueType::STRING, std::move(s)};
}
Value Value::arr_f32(const std::vector<float>& x) {
  return Value{ValueType::ARRAY, ValueType::F32, std::vector<double>(x.begin(), x.end())};
}
Value Value::arr_i32(const std::vector<int32_t>& x) {
  return Value{ValueType::ARRAY, ValueType::I32, std::vector<int64_t>(x.begin(), x.end())};
}

int64_t TensorInfo::n_elements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;  // validated not to overflow for tensors read from files
  return n;
}

// ---------------------------------------------------------------- File

File::~File() {
  if (map_) munmap(map_, map_len_);
}

void File::fail(const std::string& problem) const { throw Error(path_ + ": " + problem); }

namespace {

// Private read-only copy of the whole file in anonymous memory (huge pages
// requested); nullptr when the memory cannot be reserved. Throws on a read error.
void* load_anonymous(int fd, size_t size, const std::string& path) {
  void* m = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return nullptr;
  madvise(m, size, MADV_HUGEPAGE);  // advisory: ignored where THP is off
  auto* dst = static_cast<uint8_t*>(m);
  for (size_t off = 0; off < size;) {
    const ssize_t r = pread(fd, dst + off, std::min<size_t>(size - off, size_t{1} << 26), static_cast<off_t>(off));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      const int e = r < 0 ? errno : 0;
      munmap(m, size);
      throw Error(path + ": read failed at byte " + std::to_string(off) + ": " +
                  (e ? std::strerror(e) : "the file became shorter while it was read"));
    }
    off += static_cast<size_t>(r);
  }
  mprotect(m, size, PROT_READ);  // weights are never written
  return m;
}

}  // namespace

std::unique_ptr<File> File::open(const std::string& path, Residency residency) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error(path + ": cannot stat: " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kHeaderBytes) {
    ::close(fd);
    throw Error(path + ": not a GGUF file (only " + std::to_string(size) + " bytes, header needs " +
                std::to_string(kHeaderBytes) + ")");
  }
  if (size > std::numeric_limits<size_t>::max()) {
    ::close(fd);
    throw Error(path + ": file too large to map");
  }
  void* m = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_PRIVATE, fd, 0);
  if (m == MAP_FAILED) {
    const int e = errno;
    ::close(fd);
    throw Error(path + ": cannot mmap: " + std::strerror(e));
  }
  std::unique_ptr<File> f(new File());
  f->path_ = path;
  f->map_ = m;
  f->map_len_ = static_cast<size_t>(size);
  f->base_ = static_cast<const uint8_t*>(m);
  f->size_ = size;
  try {
    f->parse();  // validated on the mapping first: a bad file is never read whole
    if (residency == Residency::Load) {
      if (void* a = load_anonymous(fd, f->map_len_, path)) {
        munmap(f->map_, f->map_len_);
        f->map_ = a;
        f->base_ = static_cast<const uint8_t*>(a);
        f->residency_ = Residency::Load;
      }
    }
  } catch (...) {
    ::close(fd);
    throw;  // ~File unmaps
  }
  ::close(fd);
  return f;
}

std::unique_ptr<File> File::open_memory(const uint8_t* data, size_t size, std::string name) {
  std::unique_ptr<File> f(new File());
  f->path_ = std::move(name);
  f->base_ = data;
  f->size_ = size;
  f->parse();
  return f;
}

void File::parse() {
  Cursor c(base_, size_, path_);
  if (size_ < 4 || std::memcmp(base_, kMagic, 4) != 0) fail("not a GGUF file (bad magic)");
  c.get<uint32_t>("magic");
  version_ = c.get<uint32_t>("version");
  if (version_ != 0 && (version_ & 0xFFFF) == 0)
    fail("GGUF file has big-endian byte order (not supported)");
  if (version_ != 2 && version_ != 3)
    fail("GGUF version " + std::to_string(version_) + " is not supported (only versions 2 and 3)");
  const uint64_t n_tensors = c.get<uint64_t>("tensor count");
  const uint64_t n_kv = c.get<uint64_t>("metadata count");
  if (n_tensors > c.remaining() / kMinTensorInfoBytes)
    fail("tensor count " + std::to_string(n_tensors) + " is impossible for a file of " + std::to_string(size_) +
         " bytes");
  if (n_kv > c.remaining() / kMinKvBytes)
    fail("metadata count " + std::to_string(n_kv) + " is impossible for a file of " + std::to_string(size_) +
         " bytes");
  if (n_tensors * kMinTensorInfoBytes + n_kv * kMinKvBytes > c.remaining())  // no overflow: both bounded
    fail("tensor count " + std::to_string(n_tensors) + " and metadata count " + std::to_string(n_kv) +
         " are impossible for a file of " + std::to_string(size_) + " bytes");

  // Metadata.
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.str("metadata key #" + std::to_string(i));
    uint32_t type = c.get<uint32_t>("type of metadata key " + quoted(key));
    Value v = read_value(c, type, key);
    if (kv_index_.count(key)) fail("duplicate metadata key " + quoted(key));
    kv_index_.emplace(key, kv_.size());
    kv_.emplace_back(std::move(key), std::move(v));
  }

  alignment_ = kDefaultAlignment;
  if (const Value* a = find("general.alignment")) {
    if (a->type != ValueType::U32)
      fail("metadata key 'general.alignment' has type " + value_type_desc(*a) + ", expected u32");
    uint64_t al = std::get<uint64_t>(a->v);
    if (!valid_alignment(al)) fail(alignment_problem(al));
    alignment_ = al;
  }

  // Tensor table.
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorInfo t;
    t.name = c.str("name of tensor #" + std::to_string(i));
    const std::string what = "tensor " + quoted(t.name);
    if (t.name.size() > kMaxTensorName)
      fail("name of tensor #" + std::to_string(i) + " is " + std::to_string(t.name.size()) +
           " bytes long (at most " + std::to_string(kMaxTensorName) + " allowed)");
    if (tensor_index_.count(t.name)) fail("duplicate tensor name " + quoted(t.name));
    uint32_t n_dims = c.get<uint32_t>(what + " dimension count");
    if (n_dims < 1 || n_dims > static_cast<uint32_t>(kMaxDims))
      fail(what + " has " + std::to_string(n_dims) + " dimensions (must be 1 to " + std::to_string(kMaxDims) +
           ")");
    uint64_t n_el = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = c.get<uint64_t>(what + " dimension");
      if (dim == 0) fail(what + " has a zero dimension");
      if (dim > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          n_el > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / dim)
        fail(what + " has too many elements (dimension product overflows)");
      n_el *= dim;
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    uint32_t type = c.get<uint32_t>(what + " type");
    auto tr = dtype_traits(type);
    if (!tr) fail(what + " has unsupported type " + std::to_string(type));
    t.type = static_cast<DType>(type);
    if (t.dims[0] % tr->block_elems != 0)
      fail(what + " has row length " + std::to_string(t.dims[0]) + ", not a multiple of the " +
           std::string(tr->name) + " block size " + std::to_string(tr->block_elems));
    uint64_t blocks = n_el / static_cast<uint64_t>(tr->block_elems);
    if (blocks > std::numeric_limits<uint64_t>::max() / tr->block_bytes)
      fail(what + " byte size overflows");
    t.nbytes = blocks * tr->block_bytes;
    t.offset = c.get<uint64_t>(what + " offset");
    if (t.offset % alignment_ != 0)
      fail(what + " has offset " + std::to_string(t.offset) + ", not a multiple of the alignment " +
           std::to_string(alignment_));
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // Data section: starts at the aligned end of the tensor table. A file with
  // no tensor data may end before that point (llama.cpp's vocab files do).
  data_offset_ = align_up(c.pos(), alignment_);  // pos <= size_ and alignment <= 1 MiB: no overflow
  const uint64_t data_size = size_ > data_offset_ ? size_ - data_offset_ : 0;
  for (const TensorInfo& t : tensors_) {
    if (t.offset > data_size || t.nbytes > data_size - t.offset)
      fail("tensor " + quoted(t.name) + " (offset " + std::to_string(t.offset) + ", " + std::to_string(t.nbytes) +
           " bytes) extends past the end of the file (data section has " + std::to_string(data_size) +
           " bytes)");
  }
  // Overlap check, in offset order (tensors may be stored in any order).
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors_.size());
  for (const TensorInfo& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    const TensorInfo& a = *by_offset[i - 1];
    const TensorInfo& b = *by_offset[i];
    if (a.offset + a.nbytes > b.offset)  // both within data_size: no overflow
      fail("tensors " + quoted(a.name) + " and " + quoted(b.name) + " overlap");
  }
}

const Value* File::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

namespace {
[[noreturn]] void mismatch(const std::string& path, std::string_view key, const Value& v, const char* expected) {
  throw Error(path + ": metadata key " + quoted(key) + " has type " + value_type_desc(v) + ", expected " +
              expected);
}
}  // namespace

std::optional<uint64_t> File::get_uint(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (is_unsigned(v->type)) return std::get<uint64_t>(v->v);
  if (is_signed(v->type)) {
    int64_t x = std::get<int64_t>(v->v);
    if (x < 0)
      fail("metadata key " + quoted(key) + " has negative value " + std::to_string(x) +
           ", expected an unsigned integer");
    return static_cast<uint64_t>(x);
  }
  mismatch(path_, key, *v, "integer");
}

std::optional<int64_t> File::get_int(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (is_signed(v->type)) return std::get<int64_t>(v->v);
  if (is_unsigned(v->type)) {
    uint64_t x = std::get<uint64_t>(v->v);
    if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("metadata key " + quoted(key) + " value " + std::to_string(x) + " does not fit in int64");
    return static_cast<int64_t>(x);
  }
  mismatch(path_, key, *v, "integer");
}

std::optional<double> File::get_float(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (is_float(v->type)) return std::get<double>(v->v);
  if (is_unsigned(v->type)) return static_cast<double>(std::get<uint64_t>(v->v));
  if (is_signed(v->type)) return static_cast<double>(std::get<int64_t>(v->v));
  mismatch(path_, key, *v, "float");
}

std::optional<bool> File::get_bool(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::BOOL) mismatch(path_, key, *v, "bool");
  return std::get<bool>(v->v);
}

std::optional<std::string> File::get_string(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::STRING) mismatch(path_, key, *v, "string");
  return std::get<std::string>(v->v);
}

const std::vector<std::string>* File::get_str_array(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return nullptr;
  if (v->type != ValueType::ARRAY || v->elem_type != ValueType::STRING)
    mismatch(path_, key, *v, "array of string");
  return &std::get<std::vector<std::string>>(v->v);
}

std::optional<std::vector<double>> File::get_float_array(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::ARRAY || !is_float(v->elem_type)) mismatch(path_, key, *v, "array of float");
  return std::get<std::vector<double>>(v->v);
}

std::optional<std::vector<int64_t>> File::get_int_array(std::string_view key) const {
  const Value* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != ValueType::ARRAY || !is_integer(v->elem_type)) mismatch(path_, key, *v, "array of integer");
  if (is_signed(v->elem_type)) return std::get<std::vector<int64_t>>(v->v);
  const auto& u = std::get<std::vector<uint64_t>>(v->v);
  std::vector<int64_t> out;
  out.reserve(u.size());
  for (uint64_t x : u) {
    if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      fail("metadata key " + quoted(key) + " has element " + std::to_string(x) + " that does not fit in int64");
    out.push_back(static_cast<int64_t>(x));
  }
  return out;
}

namespace {
template <typename T>
T required(const std::optional<T>& x, const std::string& path, std::string_view key) {
  if (!x) throw Error(path + ": missing metadata key " + quoted(key));
  return *x;
}
}  // namespace

uint64_t File::require_uint(std::string_view key) const { return required(get_uint(key), path_, key); }
int64_t File::require_int(std::string_view key) const { return required(get_int(key), path_, key); }
double File::require_float(std::string_view key) const { return required(get_float(key), path_, key); }
bool File::require_bool(std::string_view key) const { return required(get_bool(key), path_, key); }
std::string File::require_string(std::string_view key) const { return required(get_string(key), path_, key); }
const std::vector<std::string>& File::require_str_array(std::string_view key) const {
  const auto* a = get_str_array(key);
  if (!a) fail("missing metadata key " + quoted(key));
  return *a;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& File::require_tensor(std::string_view name) const {
  const TensorInfo* t = find_tensor(name);
  if (!t) fail("missing tensor " + quoted(name));
  return *t;
}

const uint8_t* File::tensor_data(const TensorInfo& t) const {
  const uint64_t data_size = size_ > data_offset_ ? size_ - data_offset_ : 0;
  if (t.offset > data_size || t.nbytes > data_size - t.offset)
    fail("tensor " + quoted(t.name) + " does not lie inside the data section");
  return base_ + data_offset_ + t.offset;
}

void File::touch_all() const {
  static const uint64_t page = [] {
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? static_cast<uint64_t>(p) : uint64_t{4096};
  }();
  const volatile uint8_t* p = base_;
  uint64_t sum = 0;
  // One byte in every page that intersects [data_offset_, size_).
  for (uint64_t off = data_offset_; off < size_; off = (off / page + 1) * page) sum += p[off];
  [[maybe_unused]] static volatile uint64_t sink;
  sink = sum;
}

// ---------------------------------------------------------------- Writer

struct Writer::Impl {
  struct Tensor {
    std::string name;
    DType type;
    std::vector<int64_t> dims;
    uint64_t nbytes = 0;
    uint64_t offset = 0;
  };
  enum class State { Declaring, Writing, Done, Failed };

  std::string path, tmp;
  uint64_t alignment = kDefaultAlignment;
  std::vector<std::pair<std::string, Value>> kv;
  std::vector<Tensor> tensors;
  std::set<std::string, std::less<>> names;
  State state = State::Declaring;
  int fd = -1;
  bool tmp_created = false;
  size_t next = 0;           // index of the tensor being written
  uint64_t cur_written = 0;  // bytes of tensors[next] written so far
  uint64_t pos = 0;          // bytes handed to write so far (file position)
  std::vector<uint8_t> buf;

  [[noreturn]] void fail(const std::string& problem) {
    if (state == State::Writing) state = State::Failed;
    throw Error(path + ": " + problem);
  }

  void raw_write(const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      ssize_t w = ::write(fd, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        fail(std::string("write to ") + tmp + " failed: " + std::strerror(errno));
      }
      p += w;
      n -= static_cast<size_t>(w);
    }
  }
  void flush() {
    if (!buf.empty()) raw_write(buf.data(), buf.size());
    buf.clear();
  }
  void put(const void* data, size_t n) {
    constexpr size_t kBuf = 1 << 20;
    if (buf.size() + n > kBuf) flush();
    if (n >= kBuf) {
      raw_write(data, n);
    } else {
      const uint8_t* p = static_cast<const uint8_t*>(data);
      buf.insert(buf.end(), p, p + n);
    }
    pos += n;
  }
  template <typename T>
  void put_le(T x) {
    put(&x, sizeof(T));
  }
  void put_str(const std::string& s) {
    put_le<uint64_t>(s.size());
    put(s.data(), s.size());
  }
  void pad_to_alignment() {
    static const uint8_t zeros[4096] = {};
    uint64_t n = align_up(pos, alignment) - pos;
    while (n > 0) {
      size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof zeros));
      put(zeros, k);
      n -= k;
    }
  }

  void check_value(const std::string& key, const Value& v);
  void put_scalar(ValueType t, const Value& v);
  void put_value(const Value& v);
};

namespace {

// Whether sign/magnitude (x = neg ? -mag : mag) fits integer type t.
bool int_fits(ValueType t, bool neg, uint64_t mag) {
  switch (t) {
    case ValueType::U8: return !neg && mag <= 0xFF;
    case ValueType::U16: return !neg && mag <= 0xFFFF;
    case ValueType::U32: return !neg && mag <= 0xFFFFFFFFu;
    case ValueType::U64: return !neg;
    case ValueType::I8: return neg ? mag <= 128 : mag <= 127;
    case ValueType::I16: return neg ? mag <= 32768 : mag <= 32767;
    case ValueType::I32: return neg ? mag <= 2147483648u : mag <= 2147483647u;
    case ValueType::I64: return neg ? mag <= (uint64_t{1} << 63) : mag <= (uint64_t{1} << 63) - 1;
    default: return false;
  }
}
bool int_fits_u(ValueType t, uint64_t x) { return int_fits(t, false, x); }
bool int_fits_s(ValueType t, int64_t x) {
  return x < 0 ? int_fits(t, true, uint64_t{0} - static_cast<uint64_t>(x)) : int_fits(t, false, static_cast<uint64_t>(x));
}

void put_int_bytes(std::vector<uint8_t>& out, ValueType t, uint64_t bits) {
  size_t n = static_cast<size_t>(scalar_size(static_cast<uint32_t>(t)));
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(bits >> (8 * i)));
}

}  // namespace

void Writer::Impl::check_value(const std::string& key, const Value& v) {
  const std::string what = "metadata key " + quoted(key);
  if (!known_type(static_cast<uint32_t>(v.type)))
    fail(what + " has unknown value type " + std::to_string(static_cast<uint32_t>(v.type)));
  const ValueType t = v.type == ValueType::ARRAY ? v.elem_type : v.type;
  if (v.type == ValueType::ARRAY) {
    if (t == ValueType::ARRAY) fail(what + " is a nested array (not supported)");
    if (!known_type(static_cast<uint32_t>(t)))
      fail(what + " has unknown array element type " + std::to_string(static_cast<uint32_t>(t)));
  }
  const bool arr = v.type == ValueType::ARRAY;
  auto bad = [&] { fail(what + " of type " + value_type_desc(v) + " holds a value of the wrong kind"); };
  auto range = [&] { fail(what + " holds a value out of range for " + type_name(t)); };
  if (is_integer(t)) {
    if (!arr) {
      if (auto* u = std::get_if<uint64_t>(&v.v)) {
        if (!int_fits_u(t, *u)) range();
      } else if (auto* s = std::get_if<int64_t>(&v.v)) {
        if (!int_fits_s(t, *s)) range();
      } else {
        bad();
      }
    } else {
      if (auto* u = std::get_if<std::vector<uint64_t>>(&v.v)) {
        for (uint64_t x : *u)
          if (!int_fits_u(t, x)) range();
      } else if (auto* s = std::get_if<std::vector<int64_t>>(&v.v)) {
        for (int64_t x : *s)
          if (!int_fits_s(t, x)) range();
      } else {
        bad();
      }
    }
  } else if (is_float(t)) {
    if (arr ? !std::holds_alternative<std::vector<double>>(v.v) : !std::holds_alternative<double>(v.v)) bad();
  } else if (t == ValueType::BOOL) {
    if (arr ? !std::holds_alternative<std::vector<bool>>(v.v) : !std::holds_alternative<bool>(v.v)) bad();
  } else {  // STRING
    if (arr ? !std::holds_alternative<std::vector<std::string>>(v.v) : !std::holds_alternative<std::string>(v.v))
      bad();
  }
}

void Writer::Impl::put_value(const Value& v) {
  put_le<uint32_t>(static_cast<uint32_t>(v.type));
  std::vector<uint8_t> tmpb;
  auto put_int = [&](ValueType t, uint64_t bits) {
    tmpb.clear();
    put_int_bytes(tmpb, t, bits);
    put(tmpb.data(), tmpb.size());
  };
  auto put_float = [&](ValueType t, double x) {
    if (t == ValueType::F32)
      put_le<float>(static_cast<float>(x));
    else
      put_le<double>(x);
  };
  if (v.type != ValueType::ARRAY) {
    const ValueType t = v.type;
    if (is_integer(t)) {
      if (auto* u = std::get_if<uint64_t>(&v.v))
        put_int(t, *u);
      else
        put_int(t, static_cast<uint64_t>(std::get<int64_t>(v.v)));
    } else if (is_float(t)) {
      put_float(t, std::get<double>(v.v));
    } else if (t == ValueType::BOOL) {
      put_le<uint8_t>(std::get<bool>(v.v) ? 1 : 0);
    } else {
      put_str(std::get<std::string>(v.v));
    }
    return;
  }
  const ValueType t = v.elem_type;
  put_le<uint32_t>(static_cast<uint32_t>(t));
  std::visit(
      [&](const auto& a) {
        using A = std::decay_t<decltype(a)>;
        if constexpr (std::is_same_v<A, std::vector<uint64_t>> || std::is_same_v<A, std::vector<int64_t>>) {
          put_le<uint64_t>(a.size());
          for (auto x : a) put_int(t, static_cast<uint64_t>(x));
        } else if constexpr (std::is_same_v<A, std::vector<double>>) {
          put_le<uint64_t>(a.size());
          for (double x : a) put_float(t, x);
        } else if constexpr (std::is_same_v<A, std::vector<bool>>) {
          put_le<uint64_t>(a.size());
          for (bool x : a) put_le<uint8_t>(x ? 1 : 0);
        } else if constexpr (std::is_same_v<A, std::vector<std::string>>) {
          put_le<uint64_t>(a.size());
          for (const auto& s : a) put_str(s);
        }
      },
      v.v);
}

Writer::Writer(std::string path, uint64_t alignment) : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
  impl_->tmp = impl_->path + ".tmp";
  if (!valid_alignment(alignment)) impl_->fail(alignment_problem(alignment));
  impl_->alignment = alignment;
}

Writer::~Writer() {
  if (!impl_) return;
  if (impl_->fd >= 0) ::close(impl_->fd);
  if (impl_->tmp_created && impl_->state != Impl::State::Done) ::unlink(impl_->tmp.c_str());
}

void Writer::set(std::string key, Value v) {
  Impl& m = *impl_;
  if (m.state != Impl::State::Declaring) m.fail("set(" + quoted(key) + ") called after begin()");
  m.check_value(key, v);
  if (key == "general.alignment") {
    if (v.type != ValueType::U32) m.fail("metadata key 'general.alignment' must have type u32");
    uint64_t a = std::holds_alternative<uint64_t>(v.v) ? std::get<uint64_t>(v.v)
                                                        : static_cast<uint64_t>(std::get<int64_t>(v.v));
    if (!valid_alignment(a)) m.fail(alignment_problem(a));
    m.alignment = a;
  }
  for (auto& kv : m.kv) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  m.kv.emplace_back(std::move(key), std::move(v));
}

void Writer::add_tensor(std::string name, DType type, std::vector<int64_t> dims) {
  Impl& m = *impl_;
  if (m.state != Impl::State::Declaring) m.fail("add_tensor(" + quoted(name) + ") called after begin()");
  const std::string what = "tensor " + quoted(name);
  if (name.size() > kMaxTensorName)
    m.fail(what + " has a name longer than " + std::to_string(kMaxTensorName) + " bytes");
  if (m.names.count(name)) m.fail("duplicate tensor name " + quoted(name));
  if (dims.empty() || dims.size() > static_cast<size_t>(kMaxDims))
    m.fail(what + " has " + std::to_string(dims.size()) + " dimensions (must be 1 to " +
           std::to_string(kMaxDims) + ")");
  auto tr = dtype_traits(static_cast<uint32_t>(type));
  if (!tr) m.fail(what + " has unsupported type " + std::to_string(static_cast<uint32_t>(type)));
  uint64_t n = 1;
  for (int64_t d : dims) {
    if (d <= 0) m.fail(what + " has a non-positive dimension " + std::to_string(d));
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) / static_cast<uint64_t>(d))
      m.fail(what + " has too many elements");
    n *= static_cast<uint64_t>(d);
  }
  if (dims[0] % tr->block_elems != 0)
    m.fail(what + " has row length " + std::to_string(dims[0]) + ", not a multiple of the " +
           std::string(tr->name) + " block size " + std::to_string(tr->block_elems));
  uint64_t blocks = n / static_cast<uint64_t>(tr->block_elems);
  if (blocks > std::numeric_limits<uint64_t>::max() / 2 / tr->block_bytes) m.fail(what + " is too large");
  Impl::Tensor t;
  t.name = name;
  t.type = type;
  t.dims = std::move(dims);
  t.nbytes = blocks * tr->block_bytes;
  m.names.insert(name);
  m.tensors.push_back(std::move(t));
}

void Writer::begin() {
  Impl& m = *impl_;
  if (m.state != Impl::State::Declaring) m.fail("begin() called twice");
  // If the caller did not set general.alignment, it is only written when it
  // differs from the default (as ggml does).
  bool has_key = false;
  for (auto& kv : m.kv) has_key |= kv.first == "general.alignment";
  if (!has_key && m.alignment != kDefaultAlignment)
    m.kv.emplace_back("general.alignment", Value::u32(static_cast<uint32_t>(m.alignment)));
  // Offsets in declaration order, each aligned.
  uint64_t off = 0;
  for (auto& t : m.tensors) {
    t.offset = off;
    if (t.nbytes > std::numeric_limits<uint64_t>::max() / 2 - off) m.fail("total tensor data too large");
    off = align_up(off + t.nbytes, m.alignment);
  }

  m.fd = ::open(m.tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (m.fd < 0) m.fail("cannot create " + m.tmp + ": " + std::strerror(errno));
  m.tmp_created = true;
  m.state = Impl::State::Writing;

  m.put(kMagic, 4);
  m.put_le<uint32_t>(3);
  m.put_le<uint64_t>(m.tensors.size());
  m.put_le<uint64_t>(m.kv.size());
  for (const auto& [key, v] : m.kv) {
    m.put_str(key);
    m.put_value(v);
  }
  for (const auto& t : m.tensors) {
    m.put_str(t.name);
    m.put_le<uint32_t>(static_cast<uint32_t>(t.dims.size()));
    for (int64_t d : t.dims) m.put_le<uint64_t>(static_cast<uint64_t>(d));
    m.put_le<uint32_t>(static_cast<uint32_t>(t.type));
    m.put_le<uint64_t>(t.offset);
  }
  m.pad_to_alignment();
  m.pos = 0;  // from here on, pos counts bytes of the data section
}

void Writer::write_tensor_chunk(const void* data, size_t nbytes) {
  Impl& m = *impl_;
  if (m.state == Impl::State::Declaring) m.fail("tensor data written before begin()");
  if (m.state != Impl::State::Writing) m.fail("tensor data written after finish() or a failure");
  if (m.next >= m.tensors.size())
    m.fail("more tensor data written than the " + std::to_string(m.tensors.size()) + " declared tensors hold");
  const Impl::Tensor& t = m.tensors[m.next];
  if (nbytes > t.nbytes - m.cur_written)
    m.fail("tensor " + quoted(t.name) + " holds " + std::to_string(t.nbytes) + " bytes, got " +
           std::to_string(m.cur_written + nbytes));
  if (m.cur_written == 0 && m.pos != t.offset) m.fail("internal error: tensor " + quoted(t.name) + " misplaced");
  m.put(data, nbytes);
  m.cur_written += nbytes;
  if (m.cur_written == t.nbytes) {
    m.pad_to_alignment();
    m.cur_written = 0;
    ++m.next;
  }
}

void Writer::write_tensor_data(const void* data, size_t nbytes) {
  Impl& m = *impl_;
  if (m.state == Impl::State::Writing && m.next < m.tensors.size()) {
    const Impl::Tensor& t = m.tensors[m.next];
    if (m.cur_written != 0) m.fail("tensor " + quoted(t.name) + " was partly written with write_tensor_chunk()");
    if (nbytes != t.nbytes)
      m.fail("tensor " + quoted(t.name) + " holds " + std::to_string(t.nbytes) + " bytes, got " + std::to_string(nbytes));
  }
  write_tensor_chunk(data, nbytes);
}

void Writer::finish() {
  Impl& m = *impl_;
  if (m.state == Impl::State::Declaring) begin();
  if (m.state != Impl::State::Writing) m.fail("finish() called after finish() or a failure");
  if (m.next != m.tensors.size() || m.cur_written != 0)
    m.fail("finish() called after " + std::to_string(m.next) + " of " + std::to_string(m.tensors.size()) +
           " tensors were written");
  m.flush();
  if (::fsync(m.fd) != 0) m.fail("fsync of " + m.tmp + " failed: " + std::strerror(errno));
  int fd = m.fd;
  m.fd = -1;
  if (::close(fd) != 0) m.fail("close of " + m.tmp + " failed: " + std::strerror(errno));
  if (::rename(m.tmp.c_str(), m.path.c_str()) != 0)
    m.fail("cannot rename " + m.tmp + " to the final name: " + std::strerror(errno));
  m.state = Impl::State::Done;
  // Make the rename durable too (best effort).
  std::string dir = m.path;
  size_t slash = dir.rfind('/');
  dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : dir.substr(0, slash));
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace sg::gguf
