// LLaMA SentencePiece BPE tokenizer with byte fallback. Gives exactly what the
// SentencePiece library (0.1.97) gives for Llama-2's tokenizer.model: a
// dummy-prefix space, spaces as U+2581, invalid UTF-8 bytes as U+FFFD, merges
// by piece score (ties: leftmost), unknown symbols as <0xXX> byte pieces.
// No special-token parsing of user text. See docs/tokenizer.md.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "text/vocab.h"

namespace sg {

class Tokenizer {
 public:
  // Throws sg::Error ("vocab: <problem>") if check_vocab refuses `vocab`.
  explicit Tokenizer(Vocab vocab);

  // add_bos prepends bos() (nothing if bos() is -1). "" gives no tokens.
  std::vector<int32_t> encode(std::string_view text, bool add_bos) const;
  // SentencePiece decode: byte pieces reassembled (invalid UTF-8 → U+FFFD per
  // byte), U+2581 → space, the leading space of the first piece dropped,
  // control tokens (bos/eos) skipped, the unknown token as " ⁇ ".
  // Throws sg::Error for an id outside [0, n_vocab()).
  std::string decode(const std::vector<int32_t>& ids) const;
  const std::string& piece(int32_t id) const { return vocab_.pieces.at(id); }
  // SentencePiece's PieceToId: the id of an exact piece, else unk().
  int32_t piece_to_id(std::string_view piece) const;

  int32_t bos() const { return vocab_.bos; }
  int32_t eos() const { return vocab_.eos; }
  int32_t unk() const { return vocab_.unk; }
  int32_t n_vocab() const { return static_cast<int32_t>(vocab_.size()); }
  const Vocab& vocab() const { return vocab_; }

 private:
  struct SvHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using PieceMap = std::unordered_map<std::string, int32_t, SvHash, std::equal_to<>>;

  void emit(std::string_view w, std::vector<int32_t>& out,
            const std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>&
                rev_merge) const;

  Vocab vocab_;
  PieceMap piece_to_id_;     // Normal, UserDefined, Unused: the pieces merges may form
  PieceMap reserved_to_id_;  // Unknown, Control, Byte: looked up first, never merged
  size_t max_user_defined_len_ = 0;  // 0: no UserDefined pieces (matched whole, never merged)
  bool has_unused_ = false;
  // True when no mergeable piece holds U+2581 right after another character,
  // so no merge can cross the start of a "▁word": encode then runs the BPE on
  // each such word alone (same result, small heaps, better locality).
  bool split_words_ = false;
  int32_t byte_ids_[256];
  std::vector<int16_t> id_to_byte_;  // -1 unless a Byte piece
};

// How many leading ids two token sequences share (where a prompt ends and
// its answer begins, once both are tokenized as one text).
inline size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

}  // namespace sg
