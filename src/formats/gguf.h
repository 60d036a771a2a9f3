// GGUF v2/v3 reader (memory-mapped or read into memory; zero-copy tensor
// views either way) and streaming writer.
// Spec: ggml docs/gguf.md. Files are untrusted: every count, length, offset and
// size is validated against the file size before use; failures throw sg::Error
// with "<path>: <problem>".
#pragma once
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "core/dtype.h"

namespace sg::gguf {

enum class ValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
// "u8", "i32", "f32", "bool", "string", "array", ... ("type 23" if unknown).
std::string type_name(ValueType t);

constexpr int kMaxDims = 4;                    // GGML_MAX_DIMS
constexpr size_t kMaxTensorName = 63;          // GGML_MAX_NAME - 1 (ggml stores a NUL)
constexpr uint64_t kDefaultAlignment = 32;     // when general.alignment is absent
constexpr uint64_t kMinAlignment = 8;          // so every tensor pointer suits any scalar load
constexpr uint64_t kMaxAlignment = 1u << 20;   // 1 MiB

// A metadata value. Scalars of every integer width are held widened; `type`
// keeps the on-disk type so a file can be rewritten unchanged.
struct Value {
  ValueType type = ValueType::U32;
  ValueType elem_type = ValueType::U32;  // for ARRAY
  std::variant<uint64_t, int64_t, double, bool, std::string,
               std::vector<uint64_t>, std::vector<int64_t>, std::vector<double>,
               std::vector<bool>, std::vector<std::string>>
      v;

  // Convenience constructors for writing. (A hand-built Value may hold either
  // uint64_t or int64_t for any integer type; the writer checks the range.)
  static Value u8(uint8_t x);
  static Value i8(int8_t x);
  static Value u16(uint16_t x);
  static Value i16(int16_t x);
  static Value u32(uint32_t x);
  static Value i32(int32_t x);
  static Value u64(uint64_t x);
  static Value i64(int64_t x);
  static Value f32(float x);
  static Value f64(double x);
  static Value boolean(bool x);
  static Value str(std::string s);
  static Value arr_str(std::vector<std::string> s);
  static Value arr_f32(const std::vector<float>& x);
  static Value arr_i32(const std::vector<int32_t>& x);

  bool operator==(const Value&) const = default;
};

struct TensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // GGUF order: dims[0] is the innermost (row length)
  DType type = DType::F32;
  uint64_t offset = 0;        // relative to the start of the data section
  uint64_t nbytes = 0;        // computed from dims and type
  int64_t n_elements() const;
};

// Where an opened file's bytes live.
//   Map:  mmap'd read-only; pages come from the page cache on demand and the
//         kernel may drop them again. Nothing is copied.
//   Load: read once into private memory that asks for transparent huge pages,
//         then made read-only. The resident size is the same as a fully
//         touched mapping, but a decode step streams through it with far fewer
//         TLB misses: on the 2-core VMs this project is measured on, file-mapped
//         4 KiB pages read 2-5x slower than this (docs/performance.md). Falls
//         back to Map when the memory cannot be reserved.
enum class Residency { Map, Load };

class File {
 public:
  // Opens the file and validates header, metadata and tensor table on a
  // mapping; with Residency::Load, only a valid file is then read in.
  static std::unique_ptr<File> open(const std::string& path, Residency residency = Residency::Map);
  // Same validation over caller-owned bytes (not copied: they must outlive the
  // File). `name` stands in for the path in error messages. Used by the fuzzer.
  static std::unique_ptr<File> open_memory(const uint8_t* data, size_t size, std::string name);
  ~File();
  File(const File&) = delete;
  File& operator=(const File&) = delete;

  const std::string& path() const { return path_; }
  Residency residency() const { return residency_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t file_size() const { return size_; }
  // Start of the data section (aligned end of the tensor table). For a file
  // without tensors this may lie past the end of the file.
  uint64_t data_offset() const { return data_offset_; }

  const std::vector<std::pair<std::string, Value>>& metadata() const { return kv_; }
  const Value* find(std::string_view key) const;

  // Typed getters: nullopt when absent; throw sg::Error naming the key when
  // present with an incompatible type (any integer width is accepted for ints,
  // as long as the value fits; get_float also accepts integer values).
  std::optional<uint64_t> get_uint(std::string_view key) const;
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  // Arrays: nullptr/nullopt when absent; throw when not an array of that kind.
  const std::vector<std::string>* get_str_array(std::string_view key) const;
  std::optional<std::vector<double>> get_float_array(std::string_view key) const;  // f32/f64 elems
  std::optional<std::vector<int64_t>> get_int_array(std::string_view key) const;   // any int elems
  // Required variants throw "<path>: missing metadata key '<key>'".
  uint64_t require_uint(std::string_view key) const;
  int64_t require_int(std::string_view key) const;
  double require_float(std::string_view key) const;
  bool require_bool(std::string_view key) const;
  std::string require_string(std::string_view key) const;
  const std::vector<std::string>& require_str_array(std::string_view key) const;

  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find_tensor(std::string_view name) const;
  // Throws "<path>: missing tensor '<name>'".
  const TensorInfo& require_tensor(std::string_view name) const;
  // Pointer to the tensor's bytes inside the mapping (valid while File lives).
  // Throws if `t` does not lie inside this file's data section.
  const uint8_t* tensor_data(const TensorInfo& t) const;
  // Reads every page of the data section (before timing; see DESIGN.md §7).
  void touch_all() const;

 private:
  File() = default;
  void parse();
  [[noreturn]] void fail(const std::string& problem) const;
  std::string path_;
  void* map_ = nullptr;   // owned mapping, file or anonymous (open()); null for open_memory()
  size_t map_len_ = 0;
  Residency residency_ = Residency::Map;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, Value>> kv_;
  std::map<std::string, size_t, std::less<>> kv_index_;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

// Streaming writer: declare metadata and tensor infos, then write each
// tensor's bytes in declaration order. Writes to "<path>.tmp" and renames on
// finish(), so an interrupted run never leaves a half-written file at <path>.
// Output is GGUF v3 laid out as ggml's gguf_write does: tensors at increasing
// offsets in declaration order, each padded with zeros to the alignment
// (including the last). general.alignment is written only when the alignment
// is not 32, or when the caller set() it explicitly.
class Writer {
 public:
  explicit Writer(std::string path, uint64_t alignment = kDefaultAlignment);
  ~Writer();  // removes the temporary file if finish() was not reached
  // Replaces an existing key (keeping its position). Setting
  // "general.alignment" (must be U32) changes the writer's alignment.
  void set(std::string key, Value v);
  void add_tensor(std::string name, DType type, std::vector<int64_t> dims);
  void begin();  // writes header, metadata, tensor table, padding
  // Appends the next declared tensor's bytes; size must equal its nbytes.
  void write_tensor_data(const void* data, size_t nbytes);
  // Appends part of the next tensor's bytes (for producing a big tensor in
  // row chunks); the tensor is complete once its nbytes have been appended.
  void write_tensor_chunk(const void* data, size_t nbytes);
  void finish();  // pads, flushes, fsyncs, renames (calls begin() if needed)

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sg::gguf
