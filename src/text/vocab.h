// A SentencePiece-style vocabulary as both GGUF (tokenizer.ggml.*) and
// SentencePiece's tokenizer.model describe it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace sg {

namespace gguf { class File; }

enum class TokenType : int32_t {  // SentencePiece / GGUF numbering
  Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6,
};

struct Vocab {
  std::vector<std::string> pieces;  // UTF-8, with U+2581 for spaces as stored
  std::vector<float> scores;
  std::vector<TokenType> types;
  int32_t bos = 1, eos = 2, unk = 0;  // bos/eos may be -1 (none); unk must be the Unknown piece
  bool add_bos = true;
  bool add_space_prefix = true;  // SentencePiece's add_dummy_prefix
  bool byte_fallback = true;     // unknown symbols as <0xXX> pieces (needs all 256)
  size_t size() const { return pieces.size(); }
};

// From a GGUF's tokenizer.ggml.* keys (model must be "llama").
Vocab vocab_from_gguf(const gguf::File& f);
// From a SentencePiece tokenizer.model (protobuf ModelProto), parsed with a
// small bounded wire-format reader; refuses non-BPE models.
Vocab vocab_from_sentencepiece(const std::string& path);
// Same, from the file's bytes; `name` stands in for the path in errors.
Vocab vocab_from_sentencepiece_bytes(const uint8_t* data, size_t size, const std::string& name);
// Either of the above, by looking at the file's first bytes.
Vocab load_vocab(const std::string& path);

// Throws sg::Error "<name>: <problem>" unless the vocabulary is usable the way
// SentencePiece requires: equal array sizes, known types, one Unknown piece
// (== unk), non-empty pieces, no piece defined twice in the same class,
// byte pieces spelled <0xXX>, all 256 of them when byte_fallback, bos/eos
// in range or -1. Called by the loaders and by Tokenizer's constructor.
void check_vocab(const Vocab& v, const std::string& name);

}  // namespace sg
