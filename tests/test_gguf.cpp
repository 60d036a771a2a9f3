// GGUF reader/writer: round trips, the reference vocab file, and hostile inputs
// (every malformed file must give one sg::Error naming the file, never a crash
// or a huge allocation).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/gguf.h"
#include "test_util.h"

namespace fs = std::filesystem;
using sg::DType;
using sg::gguf::File;
using sg::gguf::Residency;
using sg::gguf::TensorInfo;
using sg::gguf::Value;
using sg::gguf::ValueType;
using sg::gguf::Writer;

namespace {

// Little-endian byte builder for hand-made (often malformed) files.
struct Bytes {
  std::string s;
  Bytes& raw(const void* p, size_t n) {
    s.append(static_cast<const char*>(p), n);
    return *this;
  }
  Bytes& u8(uint8_t x) { return raw(&x, 1); }
  Bytes& u32(uint32_t x) { return raw(&x, 4); }
  Bytes& u64(uint64_t x) { return raw(&x, 8); }
  Bytes& f32(float x) { return raw(&x, 4); }
  Bytes& str(std::string_view v) {
    u64(v.size());
    return raw(v.data(), v.size());
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    s += "GGUF";
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  Bytes& kv_u32(std::string_view k, uint32_t v) {
    str(k);
    u32(4);
    return u32(v);
  }
  Bytes& tensor(std::string_view name, std::vector<uint64_t> dims, uint32_t type, uint64_t offset) {
    str(name);
    u32(static_cast<uint32_t>(dims.size()));
    for (uint64_t d : dims) u64(d);
    u32(type);
    return u64(offset);
  }
  Bytes& pad(size_t a = 32) {
    while (s.size() % a) s += '\0';
    return *this;
  }
  Bytes& zeros(size_t n) {
    s.append(n, '\0');
    return *this;
  }
};

std::string write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  f.close();
  return p.string();
}

// Opens `bytes` from disk and expects sg::Error whose message starts with
// "<path>: " and contains `needle`. Also checks open_memory agrees.
void expect_error(const std::string& bytes, const std::string& needle) {
  sg::test::TempDir dir;
  const std::string path = write_file(dir / "bad.gguf", bytes);
  try {
    File::open(path);
    ADD_FAILURE() << "no error, expected one containing: " << needle;
  } catch (const sg::Error& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg << "\nexpected to contain: " << needle;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // Exact-size heap copy so that AddressSanitizer would see any overread.
  std::vector<uint8_t> mem(bytes.begin(), bytes.end());
  EXPECT_THROW(File::open_memory(mem.data(), mem.size(), "mem"), sg::Error);
}

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

// A valid single-tensor file: F32 tensor "t" with `dims`, at offset 0.
std::string one_tensor_file(std::vector<uint64_t> dims, uint32_t type = 0, uint64_t offset = 0,
                            size_t data_bytes = 64) {
  Bytes b;
  b.header(1, 1).kv_u32("k", 1).tensor("t", std::move(dims), type, offset).pad().zeros(data_bytes);
  return b.s;
}

}  // namespace

// ------------------------------------------------------------ round trips

TEST(Gguf, RoundTripEveryValueType) {
  sg::test::TempDir dir;
  const std::string path = (dir / "kv.gguf").string();
  std::vector<std::pair<std::string, Value>> kv = {
      {"u8", Value::u8(255)},
      {"i8", Value::i8(-128)},
      {"u16", Value::u16(65535)},
      {"i16", Value::i16(-32768)},
      {"u32", Value::u32(4000000000u)},
      {"i32", Value::i32(-2000000000)},
      {"f32", Value::f32(0.15625f)},
      {"bool_t", Value::boolean(true)},
      {"bool_f", Value::boolean(false)},
      {"string", Value::str(std::string("h\xc3\xa9llo\0world", 12))},
      {"empty_string", Value::str("")},
      {"u64", Value::u64(std::numeric_limits<uint64_t>::max())},
      {"i64", Value::i64(std::numeric_limits<int64_t>::min())},
      {"f64", Value::f64(1e-300)},
      {"arr_u8", Value{ValueType::ARRAY, ValueType::U8, std::vector<uint64_t>{0, 1, 255}}},
      {"arr_i8", Value{ValueType::ARRAY, ValueType::I8, std::vector<int64_t>{-128, 0, 127}}},
      {"arr_u16", Value{ValueType::ARRAY, ValueType::U16, std::vector<uint64_t>{65535, 7}}},
      {"arr_i16", Value{ValueType::ARRAY, ValueType::I16, std::vector<int64_t>{-32768, 32767}}},
      {"arr_u32", Value{ValueType::ARRAY, ValueType::U32, std::vector<uint64_t>{4294967295u}}},
      {"arr_i32", Value::arr_i32({-1, 2, -3})},
      {"arr_f32", Value::arr_f32({1.5f, -2.25f, 1e30f})},
      {"arr_bool", Value{ValueType::ARRAY, ValueType::BOOL, std::vector<bool>{true, false, true}}},
      {"arr_str", Value::arr_str({"a", "", "long string with spaces"})},
      {"arr_u64", Value{ValueType::ARRAY, ValueType::U64, std::vector<uint64_t>{1ull << 63}}},
      {"arr_i64", Value{ValueType::ARRAY, ValueType::I64, std::vector<int64_t>{-(1ll << 62)}}},
      {"arr_f64", Value{ValueType::ARRAY, ValueType::F64, std::vector<double>{3.141592653589793}}},
      {"arr_empty", Value{ValueType::ARRAY, ValueType::U32, std::vector<uint64_t>{}}},
  };
  {
    Writer w(path);
    for (const auto& [k, v] : kv) w.set(k, v);
    w.finish();  // implicit begin(), no tensors
  }
  auto f = File::open(path);
  EXPECT_EQ(f->version(), 3u);
  EXPECT_EQ(f->alignment(), 32u);
  EXPECT_TRUE(f->tensors().empty());
  ASSERT_EQ(f->metadata().size(), kv.size());  // general.alignment not written for 32
  for (size_t i = 0; i < kv.size(); ++i) {
    EXPECT_EQ(f->metadata()[i].first, kv[i].first);
    EXPECT_TRUE(f->metadata()[i].second == kv[i].second) << kv[i].first;
    EXPECT_EQ(f->metadata()[i].second.type, kv[i].second.type) << kv[i].first;
    if (kv[i].second.type == ValueType::ARRAY) {
      EXPECT_EQ(f->metadata()[i].second.elem_type, kv[i].second.elem_type);
    }
  }
  EXPECT_EQ(f->get_string("string")->size(), 12u);
}

TEST(Gguf, SetReplacesKeyInPlace) {
  sg::test::TempDir dir;
  const std::string path = (dir / "r.gguf").string();
  Writer w(path);
  w.set("a", Value::u32(1));
  w.set("b", Value::u32(2));
  w.set("a", Value::str("x"));
  w.finish();
  auto f = File::open(path);
  ASSERT_EQ(f->metadata().size(), 2u);
  EXPECT_EQ(f->metadata()[0].first, "a");
  EXPECT_EQ(f->require_string("a"), "x");
}

struct TensorSpec {
  std::string name;
  DType type;
  std::vector<int64_t> dims;
  size_t nbytes;
};

static const std::vector<TensorSpec> kSpecs = {
    {"f32.mat", DType::F32, {3, 5}, 60},
    {"f16.vec", DType::F16, {7}, 14},
    {"q8_0", DType::Q8_0, {64, 3}, 2 * 34 * 3},
    {"q4_0.3d", DType::Q4_0, {32, 2, 2}, 18 * 4},
    {"q4_k", DType::Q4_K, {256, 2}, 144 * 2},
    {"q6_k", DType::Q6_K, {512}, 210 * 2},
    {"bf16.4d", DType::BF16, {5, 1, 2, 1}, 20},
};

static void write_specs(const std::string& path, uint64_t alignment, bool chunked) {
  Writer w(path, alignment);
  w.set("general.architecture", Value::str("test"));
  for (const auto& s : kSpecs) w.add_tensor(s.name, s.type, s.dims);
  w.begin();
  uint32_t seed = 1;
  for (const auto& s : kSpecs) {
    auto data = random_bytes(s.nbytes, seed++);
    if (!chunked) {
      w.write_tensor_data(data.data(), data.size());
    } else {
      size_t half = data.size() / 3;
      w.write_tensor_chunk(data.data(), half);
      w.write_tensor_chunk(data.data() + half, 0);
      w.write_tensor_chunk(data.data() + half, data.size() - half);
    }
  }
  w.finish();
}

static void check_specs(const File& f, uint64_t alignment) {
  ASSERT_EQ(f.tensors().size(), kSpecs.size());
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  uint64_t expect_off = 0;
  uint32_t seed = 1;
  for (size_t i = 0; i < kSpecs.size(); ++i) {
    const auto& s = kSpecs[i];
    const TensorInfo& t = f.tensors()[i];
    EXPECT_EQ(t.name, s.name);
    EXPECT_EQ(t.type, s.type);
    EXPECT_EQ(t.dims, s.dims);
    EXPECT_EQ(t.nbytes, s.nbytes) << s.name;
    EXPECT_EQ(t.offset, expect_off) << s.name;  // declaration order, aligned
    EXPECT_EQ(&f.require_tensor(s.name), &t);
    int64_t n = 1;
    for (auto d : s.dims) n *= d;
    EXPECT_EQ(t.n_elements(), n);
    auto data = random_bytes(s.nbytes, seed++);
    EXPECT_EQ(std::memcmp(f.tensor_data(t), data.data(), data.size()), 0) << s.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(f.tensor_data(t)) % alignment, 0u) << s.name;
    expect_off = (expect_off + s.nbytes + alignment - 1) / alignment * alignment;
  }
  // ggml layout: every tensor, including the last, is padded to the alignment.
  EXPECT_EQ(f.file_size(), f.data_offset() + expect_off);
}

TEST(Gguf, RoundTripTensors) {
  sg::test::TempDir dir;
  const std::string path = (dir / "t.gguf").string();
  write_specs(path, 32, false);
  auto f = File::open(path);
  check_specs(*f, 32);
  EXPECT_EQ(f->find("general.alignment"), nullptr);
  EXPECT_EQ(f->require_string("general.architecture"), "test");
  f->touch_all();
  // Padding bytes are zero.
  const std::string bytes = sg::test::read_bytes(path);
  const auto& t0 = f->tensors()[0];
  for (uint64_t i = f->data_offset() + t0.nbytes; i < f->data_offset() + f->tensors()[1].offset; ++i)
    EXPECT_EQ(bytes[i], '\0');
}

TEST(Gguf, LoadedAndMappedFilesHoldTheSameBytes) {
  sg::test::TempDir dir;
  const std::string path = (dir / "t.gguf").string();
  write_specs(path, 32, false);
  auto mapped = File::open(path, Residency::Map);
  auto loaded = File::open(path, Residency::Load);
  EXPECT_EQ(mapped->residency(), Residency::Map);
  EXPECT_EQ(loaded->residency(), Residency::Load);
  check_specs(*loaded, 32);
  ASSERT_EQ(loaded->tensors().size(), mapped->tensors().size());
  for (size_t i = 0; i < loaded->tensors().size(); ++i) {
    const auto& t = loaded->tensors()[i];
    EXPECT_NE(loaded->tensor_data(t), mapped->tensor_data(mapped->tensors()[i]));  // a copy, not the mapping
    EXPECT_EQ(std::memcmp(loaded->tensor_data(t), mapped->tensor_data(mapped->tensors()[i]), t.nbytes), 0) << t.name;
  }
  EXPECT_EQ(loaded->metadata(), mapped->metadata());
}

TEST(Gguf, RoundTripAlignment64AndChunkedWritesMatch) {
  sg::test::TempDir dir;
  const std::string a = (dir / "a.gguf").string(), b = (dir / "b.gguf").string();
  write_specs(a, 64, false);
  write_specs(b, 64, true);
  auto f = File::open(a);
  check_specs(*f, 64);
  EXPECT_EQ(f->require_uint("general.alignment"), 64u);
  EXPECT_EQ(f->find("general.alignment")->type, ValueType::U32);
  EXPECT_EQ(sg::test::read_bytes(a), sg::test::read_bytes(b));
}

TEST(Gguf, WriterSetAlignmentKeyOverridesConstructor) {
  sg::test::TempDir dir;
  const std::string path = (dir / "a.gguf").string();
  {
    Writer w(path, 32);
    w.set("general.alignment", Value::u32(128));
    w.add_tensor("x", DType::F32, {3});
    w.begin();
    float x[3] = {1, 2, 3};
    w.write_tensor_data(x, sizeof x);
    w.finish();
  }
  auto f = File::open(path);
  EXPECT_EQ(f->alignment(), 128u);
  EXPECT_EQ(f->data_offset() % 128, 0u);
  EXPECT_EQ(f->file_size(), f->data_offset() + 128);
  // Explicitly set key is written even when it equals the default.
  {
    Writer w(path);
    w.set("general.alignment", Value::u32(32));
    w.finish();
  }
  EXPECT_EQ(File::open(path)->require_uint("general.alignment"), 32u);
  Writer w2(path);
  EXPECT_THROW(w2.set("general.alignment", Value::u64(32)), sg::Error);
  EXPECT_THROW(w2.set("general.alignment", Value::u32(48)), sg::Error);
  EXPECT_THROW(Writer(path, 3), sg::Error);
}

// The writer's bytes equal a hand-assembled ggml-layout file.
TEST(Gguf, WriterProducesExactGgmlLayout) {
  sg::test::TempDir dir;
  const std::string path = (dir / "x.gguf").string();
  const float a[3] = {1.0f, 2.0f, 3.0f};
  const uint16_t b[2] = {0x3c00, 0x4000};
  {
    Writer w(path);
    w.set("general.architecture", Value::str("llama"));
    w.set("n", Value::u32(7));
    w.add_tensor("a", DType::F32, {3});
    w.add_tensor("b", DType::F16, {2, 1});
    w.begin();
    w.write_tensor_data(a, sizeof a);
    w.write_tensor_data(b, sizeof b);
    w.finish();
  }
  Bytes e;
  e.header(2, 2).str("general.architecture").u32(8).str("llama").kv_u32("n", 7);
  e.tensor("a", {3}, 0, 0).tensor("b", {2, 1}, 1, 32).pad();
  e.raw(a, sizeof a).pad().raw(b, sizeof b).pad();
  EXPECT_EQ(sg::test::read_bytes(path), e.s);
}

TEST(Gguf, TensorsInAnyOffsetOrderAccepted) {
  Bytes b;
  b.header(2, 0).tensor("late", {8}, 0, 32).tensor("early", {8}, 0, 0).pad();
  for (int i = 0; i < 16; ++i) b.f32(static_cast<float>(i));
  sg::test::TempDir dir;
  auto f = File::open(write_file(dir / "o.gguf", b.s));
  float x;
  std::memcpy(&x, f->tensor_data(f->require_tensor("late")), 4);
  EXPECT_EQ(x, 8.0f);
  std::memcpy(&x, f->tensor_data(f->require_tensor("early")), 4);
  EXPECT_EQ(x, 0.0f);
}

TEST(Gguf, Version2Accepted) {
  Bytes b;
  b.header(0, 1, 2).kv_u32("k", 5);
  sg::test::TempDir dir;
  auto f = File::open(write_file(dir / "v2.gguf", b.s));
  EXPECT_EQ(f->version(), 2u);
  EXPECT_EQ(f->require_uint("k"), 5u);
}

// ------------------------------------------------------------ getters

TEST(Gguf, TypedGetters) {
  sg::test::TempDir dir;
  const std::string path = (dir / "g.gguf").string();
  {
    Writer w(path);
    w.set("u8", Value::u8(200));
    w.set("i32neg", Value::i32(-5));
    w.set("i16pos", Value::i16(12));
    w.set("u64big", Value::u64(1ull << 63));
    w.set("f32", Value::f32(0.5f));
    w.set("b", Value::boolean(true));
    w.set("s", Value::str("hi"));
    w.set("toks", Value::arr_str({"x", "y"}));
    w.set("scores", Value::arr_f32({0.25f, -1.0f}));
    w.set("types", Value::arr_i32({1, 2, 3}));
    w.set("utypes", Value{ValueType::ARRAY, ValueType::U8, std::vector<uint64_t>{4, 5}});
    w.finish();
  }
  auto f = File::open(path);
  EXPECT_EQ(f->get_uint("u8"), 200u);
  EXPECT_EQ(f->get_int("u8"), 200);
  EXPECT_EQ(f->get_int("i32neg"), -5);
  EXPECT_EQ(f->require_int("i32neg"), -5);
  EXPECT_EQ(f->get_uint("i16pos"), 12u);
  EXPECT_EQ(f->get_uint("u64big"), 1ull << 63);
  EXPECT_DOUBLE_EQ(f->require_float("f32"), 0.5);
  EXPECT_DOUBLE_EQ(*f->get_float("u8"), 200.0);  // integers accepted as floats
  EXPECT_EQ(f->get_bool("b"), true);
  EXPECT_TRUE(f->require_bool("b"));
  EXPECT_EQ(f->require_string("s"), "hi");
  EXPECT_EQ(f->require_str_array("toks"), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(*f->get_float_array("scores"), (std::vector<double>{0.25, -1.0}));
  EXPECT_EQ(*f->get_int_array("types"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(*f->get_int_array("utypes"), (std::vector<int64_t>{4, 5}));
  EXPECT_FALSE(f->get_uint("absent").has_value());
  EXPECT_FALSE(f->get_string("absent").has_value());
  EXPECT_EQ(f->get_str_array("absent"), nullptr);
  EXPECT_EQ(f->find("absent"), nullptr);

  auto msg = [&](auto fn) -> std::string {
    try {
      fn();
    } catch (const sg::Error& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_EQ(msg([&] { f->require_uint("nope"); }), path + ": missing metadata key 'nope'");
  EXPECT_EQ(msg([&] { f->require_string("nope"); }), path + ": missing metadata key 'nope'");
  EXPECT_EQ(msg([&] { f->require_float("nope"); }), path + ": missing metadata key 'nope'");
  EXPECT_EQ(msg([&] { f->require_str_array("nope"); }), path + ": missing metadata key 'nope'");
  EXPECT_EQ(msg([&] { f->require_uint("s"); }), path + ": metadata key 's' has type string, expected integer");
  EXPECT_EQ(msg([&] { f->get_int("f32"); }), path + ": metadata key 'f32' has type f32, expected integer");
  EXPECT_EQ(msg([&] { f->get_string("u8"); }), path + ": metadata key 'u8' has type u8, expected string");
  EXPECT_EQ(msg([&] { f->get_bool("s"); }), path + ": metadata key 's' has type string, expected bool");
  EXPECT_EQ(msg([&] { f->get_float("s"); }), path + ": metadata key 's' has type string, expected float");
  EXPECT_EQ(msg([&] { f->get_uint("toks"); }),
            path + ": metadata key 'toks' has type array of string, expected integer");
  EXPECT_EQ(msg([&] { f->get_str_array("scores"); }),
            path + ": metadata key 'scores' has type array of f32, expected array of string");
  EXPECT_EQ(msg([&] { f->get_float_array("toks"); }),
            path + ": metadata key 'toks' has type array of string, expected array of float");
  EXPECT_EQ(msg([&] { f->get_int_array("scores"); }),
            path + ": metadata key 'scores' has type array of f32, expected array of integer");
  EXPECT_NE(msg([&] { f->get_uint("i32neg"); }).find("negative"), std::string::npos);
  EXPECT_NE(msg([&] { f->get_int("u64big"); }).find("does not fit"), std::string::npos);
  EXPECT_EQ(msg([&] { f->require_tensor("w"); }), path + ": missing tensor 'w'");
  EXPECT_EQ(f->find_tensor("w"), nullptr);
}

TEST(Gguf, TensorDataRejectsForeignTensorInfo) {
  sg::test::TempDir dir;
  auto f = File::open(write_file(dir / "t.gguf", one_tensor_file({16})));
  TensorInfo t = f->tensors()[0];
  EXPECT_NO_THROW(f->tensor_data(t));
  t.offset = 32;  // 64 data bytes: [32, 96) is past the end
  EXPECT_THROW(f->tensor_data(t), sg::Error);
  t.offset = std::numeric_limits<uint64_t>::max() - 8;
  EXPECT_THROW(f->tensor_data(t), sg::Error);
}

// ------------------------------------------------------------ the reference vocab file

TEST(Gguf, OpensLlamaVocabFile) {
  const fs::path p = sg::test::shared_dir() / "tokenizer" / "ggml-vocab-llama-spm.gguf";
  auto f = File::open(p.string());
  EXPECT_EQ(f->version(), 3u);
  EXPECT_TRUE(f->tensors().empty());
  EXPECT_EQ(f->require_string("general.architecture"), "llama");
  EXPECT_EQ(f->require_string("tokenizer.ggml.model"), "llama");
  const auto& toks = f->require_str_array("tokenizer.ggml.tokens");
  ASSERT_EQ(toks.size(), 32000u);
  EXPECT_EQ(toks[0], "<unk>");
  EXPECT_EQ(toks[1], "<s>");
  EXPECT_EQ(toks[2], "</s>");
  EXPECT_EQ(f->get_float_array("tokenizer.ggml.scores")->size(), 32000u);
  EXPECT_EQ(f->get_int_array("tokenizer.ggml.token_type")->size(), 32000u);
  EXPECT_EQ(f->require_uint("tokenizer.ggml.bos_token_id"), 1u);
  EXPECT_EQ(f->require_uint("tokenizer.ggml.eos_token_id"), 2u);
  EXPECT_EQ(f->require_uint("llama.block_count"), 32u);
  // The file ends right after the metadata: the data section starts past EOF.
  EXPECT_GE(f->data_offset(), f->file_size());
  f->touch_all();
}

// Reading a file and writing it back with the writer reproduces it byte for byte
// (the vocab file has alignment 32 and no tensors, so no padding is involved).
TEST(Gguf, RewriteOfVocabFileIsIdentical) {
  const fs::path p = sg::test::shared_dir() / "tokenizer" / "ggml-vocab-llama-spm.gguf";
  auto f = File::open(p.string());
  sg::test::TempDir dir;
  const std::string out = (dir / "copy.gguf").string();
  {
    Writer w(out);
    for (const auto& [k, v] : f->metadata()) w.set(k, v);
    w.finish();
  }
  const std::string orig = sg::test::read_bytes(p);
  const std::string copy = sg::test::read_bytes(out);
  // The writer pads the (empty) data section start to the alignment.
  ASSERT_GE(copy.size(), orig.size());
  EXPECT_EQ(copy.substr(0, orig.size()), orig);
  EXPECT_EQ(copy.size(), (orig.size() + 31) / 32 * 32);
}

// ------------------------------------------------------------ hostile inputs

TEST(Gguf, EveryTruncationIsAnError) {
  sg::test::TempDir dir;
  const std::string path = (dir / "full.gguf").string();
  {
    Writer w(path);
    w.set("general.architecture", Value::str("llama"));
    w.set("i", Value::i16(-3));
    w.set("f", Value::f64(2.5));
    w.set("b", Value::boolean(true));
    w.set("toks", Value::arr_str({"ab", "c"}));
    w.set("sc", Value::arr_f32({1, 2}));
    w.add_tensor("w", DType::Q8_0, {32, 2});  // 68 bytes, padded to 96
    w.add_tensor("v", DType::F32, {8});       // 32 bytes: the file ends exactly at its end
    w.begin();
    auto d1 = random_bytes(68, 5), d2 = random_bytes(32, 6);
    w.write_tensor_data(d1.data(), d1.size());
    w.write_tensor_data(d2.data(), d2.size());
    w.finish();
  }
  const std::string full = sg::test::read_bytes(path);
  ASSERT_NO_THROW(File::open(path));
  ASSERT_GT(full.size(), 200u);
  const std::string cut = (dir / "cut.gguf").string();
  for (size_t n = 0; n < full.size(); ++n) {
    const std::string prefix = full.substr(0, n);
    write_file(cut, prefix);
    EXPECT_THROW(File::open(cut), sg::Error) << "prefix of " << n << " bytes";
    EXPECT_THROW(File::open(cut, Residency::Load), sg::Error) << "prefix of " << n << " bytes (loaded)";
    std::vector<uint8_t> mem(prefix.begin(), prefix.end());
    EXPECT_THROW(File::open_memory(mem.data(), mem.size(), "mem"), sg::Error) << "prefix of " << n << " bytes";
  }
}

TEST(Gguf, WrongMagic) {
  Bytes b;
  b.header(0, 0);
  b.s[3] = 'G';
  expect_error(b.s, "not a GGUF file (bad magic)");
  expect_error("", "not a GGUF file");
  expect_error("GGUF", "not a GGUF file");
}

TEST(Gguf, UnsupportedVersions) {
  Bytes v1;
  v1.header(0, 0, 1);
  expect_error(v1.s, "GGUF version 1 is not supported (only versions 2 and 3)");
  Bytes v4;
  v4.header(0, 0, 4);
  expect_error(v4.s, "GGUF version 4 is not supported");
  Bytes be;
  be.header(0, 0, 0x03000000);
  expect_error(be.s, "big-endian");
}

TEST(Gguf, HugeStringLength) {
  Bytes b;
  b.header(0, 1).u64(1ull << 63).zeros(16);
  expect_error(b.s, "metadata key #0 has length 9223372036854775808");
  Bytes v;
  v.header(0, 1).str("k").u32(8).u64(~0ull).s += "abc";
  expect_error(v.s, "metadata key 'k' has length 18446744073709551615");
}

TEST(Gguf, HugeArrayCount) {
  Bytes b;
  b.header(0, 1).str("arr").u32(9).u32(4).u64(1ull << 62).u32(1).u32(2);
  expect_error(b.s, "metadata key 'arr' is an array of 4611686018427387904 u32 elements");
  Bytes s;
  s.header(0, 1).str("arr").u32(9).u32(8).u64(1000).str("a");  // strings need >= 8 bytes each
  expect_error(s.s, "metadata key 'arr' is an array of 1000 string elements");
  Bytes m;
  m.header(0, 1).str("arr").u32(9).u32(12).u64(~0ull).u64(0);
  expect_error(m.s, "is an array of 18446744073709551615 f64 elements");
}

TEST(Gguf, HugeCounts) {
  Bytes t;
  t.header(1ull << 60, 0).zeros(64);
  expect_error(t.s, "tensor count 1152921504606846976 is impossible");
  Bytes k;
  k.header(0, ~0ull).zeros(64);
  expect_error(k.s, "metadata count 18446744073709551615 is impossible");
  Bytes both;  // each bound alone holds; together they do not
  both.header(2, 4).zeros(64);
  expect_error(both.s, "are impossible");
}

TEST(Gguf, BadMetadataValues) {
  Bytes nested;
  nested.header(0, 1).str("n").u32(9).u32(9).u64(1).u32(4).u64(1).u32(7);
  expect_error(nested.s, "metadata key 'n' is a nested array");
  Bytes unk;
  unk.header(0, 1).str("u").u32(13).u64(0);
  expect_error(unk.s, "metadata key 'u' has unknown value type 13");
  Bytes unk_elem;
  unk_elem.header(0, 1).str("u").u32(9).u32(99).u64(0);
  expect_error(unk_elem.s, "metadata key 'u' has unknown array element type 99");
  Bytes boolean;
  boolean.header(0, 1).str("b").u32(7).u8(2);
  expect_error(boolean.s, "invalid byte value 2");
  Bytes dup;
  dup.header(0, 2).kv_u32("k", 1).kv_u32("k", 2);
  expect_error(dup.s, "duplicate metadata key 'k'");
}

TEST(Gguf, BadAlignment) {
  auto file = [](uint32_t type, uint64_t val) {
    Bytes b;
    b.header(0, 1).str("general.alignment").u32(type);
    if (type == 4) {
      b.u32(static_cast<uint32_t>(val));
    } else {
      b.u64(val);
    }
    return b.s;
  };
  expect_error(file(4, 48), "general.alignment 48 is not supported");
  expect_error(file(4, 0), "general.alignment 0 is not supported");
  expect_error(file(4, 4), "general.alignment 4 is not supported");
  expect_error(file(4, 1u << 21), "general.alignment 2097152 is not supported");
  expect_error(file(10, 32), "metadata key 'general.alignment' has type u64, expected u32");
  // 64 is honoured: offset 32 is then unaligned.
  Bytes b;
  b.header(1, 1).kv_u32("general.alignment", 64).tensor("t", {8}, 0, 32).pad(64).zeros(128);
  expect_error(b.s, "tensor 't' has offset 32, not a multiple of the alignment 64");
}

TEST(Gguf, OffsetsPastTheEnd) {
  expect_error(one_tensor_file({16}, 0, 0, 63), "tensor 't' (offset 0, 64 bytes) extends past the end");
  expect_error(one_tensor_file({16}, 0, 32, 64), "extends past the end of the file");
  expect_error(one_tensor_file({16}, 0, 1ull << 40, 64), "extends past the end of the file");
  expect_error(one_tensor_file({16}, 0, ~0ull - 31, 64), "extends past the end of the file");
  // Tensor with no data section at all.
  Bytes b;
  b.header(1, 0).tensor("t", {1}, 0, 0);
  expect_error(b.s, "extends past the end of the file");
  // And the valid edge case passes.
  sg::test::TempDir dir;
  EXPECT_NO_THROW(File::open(write_file(dir / "ok.gguf", one_tensor_file({16}, 0, 0, 64))));
  EXPECT_NO_THROW(File::open(write_file(dir / "ok2.gguf", one_tensor_file({8}, 0, 32, 64))));
}

TEST(Gguf, UnalignedOffset) {
  expect_error(one_tensor_file({4}, 0, 8, 64), "tensor 't' has offset 8, not a multiple of the alignment 32");
}

TEST(Gguf, UnknownTensorType) {
  sg::test::TempDir dir;
  const std::string path = write_file(dir / "u.gguf", one_tensor_file({16}, 23));
  try {
    File::open(path);
    ADD_FAILURE() << "no error";
  } catch (const sg::Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": tensor 't' has unsupported type 23");
  }
  expect_error(one_tensor_file({16}, 0xFFFFFFFFu), "unsupported type 4294967295");
}

TEST(Gguf, BadDimensions) {
  expect_error(one_tensor_file({1, 1, 1, 1, 1}), "tensor 't' has 5 dimensions (must be 1 to 4)");
  expect_error(one_tensor_file({}), "tensor 't' has 0 dimensions");
  expect_error(one_tensor_file({4, 0}), "tensor 't' has a zero dimension");
  expect_error(one_tensor_file({1ull << 32, 1ull << 32}), "dimension product overflows");
  expect_error(one_tensor_file({1ull << 63}), "dimension product overflows");
  expect_error(one_tensor_file({1ull << 31, 1ull << 31}), "byte size overflows");  // 2^62 f32 = 2^64 bytes
  expect_error(one_tensor_file({1ull << 30, 1ull << 30}), "extends past the end");
  expect_error(one_tensor_file({33}, 8), "tensor 't' has row length 33, not a multiple of the q8_0 block size 32");
  expect_error(one_tensor_file({128}, 12), "not a multiple of the q4_k block size 256");
}

TEST(Gguf, DuplicateAndOverlappingTensors) {
  Bytes dup;
  dup.header(2, 0).tensor("t", {8}, 0, 0).tensor("t", {8}, 0, 32).pad().zeros(64);
  expect_error(dup.s, "duplicate tensor name 't'");
  Bytes ov;
  ov.header(2, 0).tensor("a", {16}, 0, 0).tensor("b", {8}, 0, 32).pad().zeros(96);
  expect_error(ov.s, "tensors 'a' and 'b' overlap");
  Bytes same;
  same.header(2, 0).tensor("a", {8}, 0, 0).tensor("b", {8}, 0, 0).pad().zeros(64);
  expect_error(same.s, "overlap");
  Bytes longname;
  longname.header(1, 0).tensor(std::string(64, 'n'), {8}, 0, 0).pad().zeros(32);
  expect_error(longname.s, "name of tensor #0 is 64 bytes long (at most 63 allowed)");
}

// Found by fuzzing: names from the file went into messages raw, so a key
// holding '\n' produced a two-line error. They are now escaped and cut.
TEST(Gguf, NamesInMessagesAreEscapedAndCut) {
  Bytes dup;
  dup.header(0, 2).kv_u32("a\nb", 1).kv_u32("a\nb", 2);
  expect_error(dup.s, "duplicate metadata key 'a\\x0ab'");
  Bytes esc;
  esc.header(1, 0).tensor("t\x1b[2J'\\", {8}, 23, 0).pad().zeros(32);
  expect_error(esc.s, "tensor 't\\x1b[2J\\x27\\x5c' has unsupported type 23");
  Bytes lng;
  lng.header(0, 1).str(std::string(300, 'k')).u32(99).zeros(8);
  expect_error(lng.s, "metadata key '" + std::string(96, 'k') + "...' has unknown value type 99");
}

TEST(Gguf, OpenErrorsNameThePath) {
  sg::test::TempDir dir;
  const std::string missing = (dir / "missing.gguf").string();
  try {
    File::open(missing);
    ADD_FAILURE();
  } catch (const sg::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(missing + ": cannot open", 0), 0u) << e.what();
  }
  EXPECT_THROW(File::open(dir.path().string()), sg::Error);  // a directory
}

// ------------------------------------------------------------ writer failures

TEST(Gguf, InterruptedWriterLeavesNoFile) {
  sg::test::TempDir dir;
  const fs::path path = dir / "out.gguf";
  const float x[8] = {};
  {
    Writer w(path.string());
    w.add_tensor("a", DType::F32, {8});
    w.add_tensor("b", DType::F32, {8});
    w.begin();
    w.write_tensor_data(x, sizeof x);
    EXPECT_TRUE(fs::exists(path.string() + ".tmp"));
    // destroyed without finish(), as when an exception unwinds
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));

  // An existing file at the final path survives an interrupted rewrite.
  write_file(path, "old contents");
  {
    Writer w(path.string());
    w.add_tensor("a", DType::F32, {8});
    w.begin();
  }
  EXPECT_EQ(sg::test::read_bytes(path), "old contents");
  EXPECT_FALSE(fs::exists(path.string() + ".tmp"));
}

TEST(Gguf, WriterMisuseThrowsAndLeavesNoFile) {
  sg::test::TempDir dir;
  const fs::path path = dir / "out.gguf";
  const float x[16] = {};
  {
    Writer w(path.string());
    w.add_tensor("a", DType::F32, {8});
    w.begin();
    EXPECT_THROW(w.write_tensor_data(x, 4 * 7), sg::Error);  // wrong size
  }
  EXPECT_FALSE(fs::exists(path));
  {
    Writer w(path.string());
    w.add_tensor("a", DType::F32, {8});
    w.add_tensor("b", DType::F32, {8});
    w.begin();
    w.write_tensor_data(x, 32);
    EXPECT_THROW(w.finish(), sg::Error);  // b missing
  }
  EXPECT_FALSE(fs::exists(path));
  {
    Writer w(path.string());
    w.add_tensor("a", DType::F32, {8});
    w.begin();
    w.write_tensor_data(x, 32);
    EXPECT_THROW(w.write_tensor_data(x, 32), sg::Error);  // too many
    EXPECT_THROW(w.set("k", Value::u32(1)), sg::Error);   // after begin
  }
  EXPECT_FALSE(fs::exists(path));
  Writer w(path.string());
  EXPECT_THROW(w.add_tensor("a", DType::Q8_0, {33}), sg::Error);
  EXPECT_THROW(w.add_tensor("a", DType::F32, {}), sg::Error);
  EXPECT_THROW(w.add_tensor("a", DType::F32, {1, 1, 1, 1, 1}), sg::Error);
  EXPECT_THROW(w.add_tensor("a", DType::F32, {4, 0}), sg::Error);
  EXPECT_THROW(w.add_tensor("a", static_cast<DType>(23), {4}), sg::Error);
  EXPECT_THROW(w.add_tensor(std::string(64, 'x'), DType::F32, {4}), sg::Error);
  w.add_tensor("a", DType::F32, {4});
  EXPECT_THROW(w.add_tensor("a", DType::F32, {4}), sg::Error);
  EXPECT_THROW(w.set("v", Value{ValueType::U8, ValueType::U32, uint64_t{256}}), sg::Error);
  EXPECT_THROW(w.set("v", Value{ValueType::I8, ValueType::U32, int64_t{-129}}), sg::Error);
  EXPECT_THROW(w.set("v", Value{ValueType::U32, ValueType::U32, int64_t{-1}}), sg::Error);
  EXPECT_THROW(w.set("v", Value{ValueType::STRING, ValueType::U32, uint64_t{1}}), sg::Error);
  EXPECT_THROW(w.set("v", Value{ValueType::ARRAY, ValueType::ARRAY, std::vector<uint64_t>{}}), sg::Error);
  EXPECT_THROW(w.set("v", Value{ValueType::ARRAY, ValueType::U16, std::vector<uint64_t>{70000}}), sg::Error);
  EXPECT_THROW(w.set("v", Value{static_cast<ValueType>(13), ValueType::U32, uint64_t{1}}), sg::Error);
  // Either integer alternative is accepted when in range.
  EXPECT_NO_THROW(w.set("v", Value{ValueType::U8, ValueType::U32, int64_t{255}}));
  EXPECT_NO_THROW(w.set("v", Value{ValueType::I64, ValueType::U32, uint64_t{5}}));
}
