// Vocabulary loaders: SentencePiece's tokenizer.model (protobuf ModelProto,
// read with a small bounded wire-format reader, no libprotobuf) and a GGUF's
// tokenizer.ggml.* keys. Both files are untrusted: every length is checked
// against what is left of the enclosing message before it is used.
#include "text/vocab.h"

#include <cerrno>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <unordered_set>

#include "core/error.h"
#include "formats/gguf.h"

namespace sg {
namespace {

[[noreturn]] void fail(const std::string& name, const std::string& problem) {
  throw Error(name + ": " + problem);
}

// ---------------------------------------------------------------------------
// Protobuf wire format (https://protobuf.dev/programming-guides/encoding/).

enum Wire : uint32_t { kVarint = 0, kFixed64 = 1, kLen = 2, kStartGroup = 3, kEndGroup = 4, kFixed32 = 5 };

class PbReader {
 public:
  // [p, end) is one message; `base` is the start of the file (for offsets).
  PbReader(const uint8_t* p, const uint8_t* end, const uint8_t* base, const std::string& name)
      : p_(p), end_(end), base_(base), name_(name) {}

  bool done() const { return p_ >= end_; }

  // Reads a field key; returns false at the end of the message.
  bool next(uint32_t& field, uint32_t& wire) {
    if (done()) return false;
    size_t at = offset();
    uint64_t k = varint();
    wire = static_cast<uint32_t>(k & 7);
    uint64_t f = k >> 3;
    if (f == 0 || f > 536870911u) bad("invalid field number " + std::to_string(f), at);
    if (wire == kStartGroup || wire == kEndGroup || wire > kFixed32)
      bad("unsupported wire type " + std::to_string(wire), at);
    field = static_cast<uint32_t>(f);
    return true;
  }

  uint64_t varint() {
    size_t at = offset();
    uint64_t v = 0;
    for (int i = 0; i < 10; ++i) {
      if (p_ >= end_) bad("truncated varint", at);
      uint8_t b = *p_++;
      if (i == 9 && b > 1) bad("varint longer than 64 bits", at);
      v |= static_cast<uint64_t>(b & 0x7f) << (7 * i);
      if (!(b & 0x80)) return v;
    }
    bad("varint longer than 10 bytes", at);
  }

  uint32_t fixed32() {
    if (end_ - p_ < 4) bad("truncated fixed32", offset());
    uint32_t v = static_cast<uint32_t>(p_[0]) | static_cast<uint32_t>(p_[1]) << 8 |
                 static_cast<uint32_t>(p_[2]) << 16 | static_cast<uint32_t>(p_[3]) << 24;
    p_ += 4;
    return v;
  }

  // A length-delimited payload, bounded by the enclosing message.
  std::pair<const uint8_t*, const uint8_t*> bytes() {
    size_t at = offset();
    uint64_t n = varint();
    if (n > static_cast<uint64_t>(end_ - p_))
      bad("length " + std::to_string(n) + " runs past the end of its message", at);
    const uint8_t* b = p_;
    p_ += n;
    return {b, p_};
  }
  std::string string() {
    auto [b, e] = bytes();
    return std::string(reinterpret_cast<const char*>(b), static_cast<size_t>(e - b));
  }
  PbReader sub() {
    auto [b, e] = bytes();
    return PbReader(b, e, base_, name_);
  }

  void skip(uint32_t wire) {
    switch (wire) {
      case kVarint: varint(); break;
      case kFixed64:
        if (end_ - p_ < 8) bad("truncated fixed64", offset());
        p_ += 8;
        break;
      case kLen: bytes(); break;
      case kFixed32: fixed32(); break;
      default: bad("unsupported wire type " + std::to_string(wire), offset());
    }
  }

  // The field has the wire type its schema gives it, or the file is refused.
  void expect(uint32_t field, uint32_t wire, uint32_t want, const char* what) {
    if (wire != want)
      bad(std::string(what) + " (field " + std::to_string(field) + ") has wire type " +
              std::to_string(wire) + ", expected " + std::to_string(want),
          offset());
  }

  [[noreturn]] void bad(const std::string& problem, size_t at) const {
    fail(name_, "not a valid SentencePiece model: " + problem + " at byte " + std::to_string(at));
  }

 private:
  size_t offset() const { return static_cast<size_t>(p_ - base_); }
  const uint8_t* p_;
  const uint8_t* end_;
  const uint8_t* base_;
  const std::string& name_;
};

struct TrainerSpec {
  int64_t model_type = 1;  // UNIGRAM
  bool treat_whitespace_as_suffix = false;
  bool byte_fallback = false;
  int32_t unk_id = 0, bos_id = 1, eos_id = 2;
};

struct NormalizerSpec {
  std::string name;
  size_t charsmap_size = 0;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
};

void read_trainer(PbReader r, TrainerSpec& t) {
  uint32_t field, wire;
  while (r.next(field, wire)) {
    auto int32 = [&](const char* what) {
      r.expect(field, wire, kVarint, what);
      return static_cast<int32_t>(static_cast<uint32_t>(r.varint()));  // proto int32: low 32 bits
    };
    switch (field) {
      case 3: r.expect(field, wire, kVarint, "trainer_spec.model_type");
        t.model_type = static_cast<int64_t>(r.varint()); break;
      case 24: r.expect(field, wire, kVarint, "trainer_spec.treat_whitespace_as_suffix");
        t.treat_whitespace_as_suffix = r.varint() != 0; break;
      case 35: r.expect(field, wire, kVarint, "trainer_spec.byte_fallback");
        t.byte_fallback = r.varint() != 0; break;
      case 40: t.unk_id = int32("trainer_spec.unk_id"); break;
      case 41: t.bos_id = int32("trainer_spec.bos_id"); break;
      case 42: t.eos_id = int32("trainer_spec.eos_id"); break;
      default: r.skip(wire);
    }
  }
}

void read_normalizer(PbReader r, NormalizerSpec& n) {
  uint32_t field, wire;
  while (r.next(field, wire)) {
    switch (field) {
      case 1: r.expect(field, wire, kLen, "normalizer_spec.name"); n.name = r.string(); break;
      case 2: {
        r.expect(field, wire, kLen, "normalizer_spec.precompiled_charsmap");
        auto [b, e] = r.bytes();
        n.charsmap_size = static_cast<size_t>(e - b);
        break;
      }
      case 3: r.expect(field, wire, kVarint, "normalizer_spec.add_dummy_prefix");
        n.add_dummy_prefix = r.varint() != 0; break;
      case 4: r.expect(field, wire, kVarint, "normalizer_spec.remove_extra_whitespaces");
        n.remove_extra_whitespaces = r.varint() != 0; break;
      case 5: r.expect(field, wire, kVarint, "normalizer_spec.escape_whitespaces");
        n.escape_whitespaces = r.varint() != 0; break;
      default: r.skip(wire);
    }
  }
}

std::string model_type_name(int64_t t) {
  switch (t) {
    case 1: return "UNIGRAM";
    case 2: return "BPE";
    case 3: return "WORD";
    case 4: return "CHAR";
    default: return std::to_string(t);
  }
}

bool parse_byte_piece(const std::string& p, int& byte) {
  // SentencePiece spells byte pieces "<0x%02X>" (upper-case hex).
  if (p.size() != 6 || p[0] != '<' || p[1] != '0' || p[2] != 'x' || p[5] != '>') return false;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  int hi = hex(p[3]), lo = hex(p[4]);
  if (hi < 0 || lo < 0) return false;
  byte = hi * 16 + lo;
  return true;
}

std::string read_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, "is a directory");
  std::ifstream f(path, std::ios::binary);
  if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
  f.seekg(0, std::ios::end);
  std::streamoff n = f.tellg();
  if (n < 0) fail(path, "cannot read");
  constexpr std::streamoff kMax = std::streamoff(1) << 30;
  if (n > kMax) fail(path, "too large for a tokenizer model (" + std::to_string(n) + " bytes)");
  f.seekg(0);
  std::string s(static_cast<size_t>(n), '\0');
  if (n > 0 && !f.read(s.data(), n)) fail(path, "read error");
  return s;
}

}  // namespace

// ---------------------------------------------------------------------------

void check_vocab(const Vocab& v, const std::string& name) {
  const size_t n = v.pieces.size();
  if (n == 0) fail(name, "vocabulary is empty");
  if (n > 0x7fffffff) fail(name, "vocabulary too large");
  if (v.scores.size() != n || v.types.size() != n)
    fail(name, "vocabulary arrays differ in size (" + std::to_string(n) + " pieces, " +
                   std::to_string(v.scores.size()) + " scores, " + std::to_string(v.types.size()) +
                   " types)");
  std::unordered_set<std::string_view> normal, reserved;
  bool bytes_seen[256] = {};
  int n_bytes = 0;
  int32_t unknown_id = -1;
  for (size_t i = 0; i < n; ++i) {
    const std::string& p = v.pieces[i];
    const int32_t t = static_cast<int32_t>(v.types[i]);
    const std::string at = "piece " + std::to_string(i);
    if (t < 1 || t > 6) fail(name, at + " has unknown token type " + std::to_string(t));
    if (p.empty()) fail(name, at + " is empty");
    if (std::isnan(v.scores[i])) fail(name, at + " has a NaN score");
    const TokenType tt = v.types[i];
    const bool is_normal =
        tt == TokenType::Normal || tt == TokenType::UserDefined || tt == TokenType::Unused;
    if (!(is_normal ? normal : reserved).insert(p).second)
      fail(name, at + " '" + p + "' is already defined");
    if (tt == TokenType::Unknown) {
      if (unknown_id >= 0) fail(name, at + ": unknown piece is already defined");
      unknown_id = static_cast<int32_t>(i);
    }
    if (tt == TokenType::Byte) {
      int b = 0;
      if (!parse_byte_piece(p, b)) fail(name, at + " '" + p + "' is a byte piece not spelled <0xXX>");
      bytes_seen[b] = true;
      ++n_bytes;
    }
  }
  if (unknown_id < 0) fail(name, "no unknown piece is defined");
  if (v.unk != unknown_id)
    fail(name, "unk id " + std::to_string(v.unk) + " is not the unknown piece (" +
                   std::to_string(unknown_id) + ")");
  auto id_ok = [&](int32_t id) { return id == -1 || (id >= 0 && static_cast<size_t>(id) < n); };
  if (!id_ok(v.bos)) fail(name, "bos id " + std::to_string(v.bos) + " out of range");
  if (!id_ok(v.eos)) fail(name, "eos id " + std::to_string(v.eos) + " out of range");
  if (v.byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      if (!bytes_seen[b]) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "<0x%02X>", b);
        fail(name, std::string("byte fallback is on but byte piece ") + buf + " is missing");
      }
    }
  } else if (n_bytes > 0) {
    fail(name, "byte pieces are defined but byte fallback is off");
  }
}

Vocab vocab_from_sentencepiece_bytes(const uint8_t* data, size_t size, const std::string& name) {
  Vocab v;
  TrainerSpec trainer;
  NormalizerSpec normalizer, denormalizer;
  bool has_trainer = false;
  PbReader r(data, data + size, data, name);
  uint32_t field, wire;
  while (r.next(field, wire)) {
    switch (field) {
      case 1: {  // repeated SentencePiece pieces
        r.expect(field, wire, kLen, "piece");
        PbReader pr = r.sub();
        std::string piece;
        float score = 0;
        int64_t type = 1;
        uint32_t f2, w2;
        while (pr.next(f2, w2)) {
          switch (f2) {
            case 1: pr.expect(f2, w2, kLen, "piece.piece"); piece = pr.string(); break;
            case 2: {
              pr.expect(f2, w2, kFixed32, "piece.score");
              uint32_t bits = pr.fixed32();
              std::memcpy(&score, &bits, 4);
              break;
            }
            case 3: pr.expect(f2, w2, kVarint, "piece.type");
              type = static_cast<int64_t>(pr.varint()); break;
            default: pr.skip(w2);
          }
        }
        if (type < 1 || type > 6)
          fail(name, "piece " + std::to_string(v.pieces.size()) + " has unknown type " +
                         std::to_string(type));
        if (v.pieces.size() >= 0x7fffffff) fail(name, "too many pieces");
        v.pieces.push_back(std::move(piece));
        v.scores.push_back(score);
        v.types.push_back(static_cast<TokenType>(type));
        break;
      }
      case 2: r.expect(field, wire, kLen, "trainer_spec"); read_trainer(r.sub(), trainer);
        has_trainer = true; break;
      case 3: r.expect(field, wire, kLen, "normalizer_spec"); read_normalizer(r.sub(), normalizer); break;
      case 5: r.expect(field, wire, kLen, "denormalizer_spec"); read_normalizer(r.sub(), denormalizer); break;
      default: r.skip(wire);
    }
  }
  if (v.pieces.empty()) fail(name, "not a SentencePiece model: no pieces");
  if (!has_trainer) fail(name, "not a SentencePiece model: no trainer_spec");
  if (trainer.model_type != 2)
    fail(name, "SentencePiece model type is " + model_type_name(trainer.model_type) +
                   "; only BPE is supported");
  if (trainer.treat_whitespace_as_suffix)
    fail(name, "treat_whitespace_as_suffix is not supported");
  if (normalizer.charsmap_size != 0)
    fail(name, "normalizer '" + normalizer.name + "' is not supported (only identity)");
  if (normalizer.remove_extra_whitespaces)
    fail(name, "normalizer option remove_extra_whitespaces is not supported");
  if (!normalizer.escape_whitespaces)
    fail(name, "normalizer without escape_whitespaces is not supported");
  if (denormalizer.charsmap_size != 0)
    fail(name, "denormalizer '" + denormalizer.name + "' is not supported");
  v.unk = trainer.unk_id;
  v.bos = trainer.bos_id;
  v.eos = trainer.eos_id;
  v.byte_fallback = trainer.byte_fallback;
  v.add_space_prefix = normalizer.add_dummy_prefix;
  v.add_bos = true;  // LLaMA's convention (SentencePiece itself adds none unless asked)
  check_vocab(v, name);
  return v;
}

Vocab vocab_from_sentencepiece(const std::string& path) {
  std::string bytes = read_file(path);
  return vocab_from_sentencepiece_bytes(reinterpret_cast<const uint8_t*>(bytes.data()),
                                        bytes.size(), path);
}

Vocab vocab_from_gguf(const gguf::File& f) {
  const std::string& name = f.path();
  const std::string model = f.require_string("tokenizer.ggml.model");
  if (model != "llama")
    fail(name, "tokenizer.ggml.model is '" + model + "'; only 'llama' (SentencePiece BPE) is supported");
  Vocab v;
  v.pieces = f.require_str_array("tokenizer.ggml.tokens");
  const size_t n = v.pieces.size();
  auto scores = f.get_float_array("tokenizer.ggml.scores");
  if (!scores) fail(name, "missing metadata key 'tokenizer.ggml.scores'");
  if (scores->size() != n)
    fail(name, "tokenizer.ggml.scores has " + std::to_string(scores->size()) + " values for " +
                   std::to_string(n) + " tokens");
  v.scores.assign(scores->begin(), scores->end());
  auto types = f.get_int_array("tokenizer.ggml.token_type");
  if (!types) fail(name, "missing metadata key 'tokenizer.ggml.token_type'");
  if (types->size() != n)
    fail(name, "tokenizer.ggml.token_type has " + std::to_string(types->size()) +
                   " values for " + std::to_string(n) + " tokens");
  v.types.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t t = (*types)[i];
    if (t < 1 || t > 6)
      fail(name, "token " + std::to_string(i) + " has unsupported token type " + std::to_string(t));
    v.types.push_back(static_cast<TokenType>(t));
  }
  auto id = [&](const char* key, int32_t dflt) -> int32_t {
    auto x = f.get_int(key);
    if (!x) return dflt;
    if (*x == 0xffffffff) return -1;  // -1 written as u32
    if (*x < -1 || *x > 0x7fffffff) fail(name, std::string(key) + " out of range: " + std::to_string(*x));
    return static_cast<int32_t>(*x);
  };
  v.bos = id("tokenizer.ggml.bos_token_id", 1);
  v.eos = id("tokenizer.ggml.eos_token_id", 2);
  v.unk = id("tokenizer.ggml.unknown_token_id", 0);
  v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token").value_or(true);
  v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
  v.byte_fallback = true;  // llama.cpp's SPM tokenizer always falls back to bytes
  check_vocab(v, name);
  return v;
}

Vocab load_vocab(const std::string& path) {
  char magic[4] = {};
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(path, "is a directory");
  {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail(path, std::string("cannot open: ") + std::strerror(errno));
    f.read(magic, 4);
    if (f.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0) {
      f.close();
      auto g = gguf::File::open(path);
      return vocab_from_gguf(*g);
    }
  }
  return vocab_from_sentencepiece(path);
}

}  // namespace sg
