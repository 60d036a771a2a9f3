// SentencePiece BPE encode/decode, following SentencePiece 0.1.97
// (normalizer.cc, bpe_model.cc, sentencepiece_processor.cc) for a model with
// the identity normalizer. See docs/tokenizer.md.
#include "text/tokenizer.h"

#include <algorithm>

#include "core/error.h"

namespace sg {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";        // U+2581
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";    // U+FFFD
constexpr std::string_view kUnkSurface = " \xE2\x81\x87 ";       // " ⁇ "

// Length of the well-formed UTF-8 character at s (shortest form, no
// surrogates, at most U+10FFFF), or 0 if the bytes there are not one:
// SentencePiece's string_util::DecodeUTF8 / IsValidDecodeUTF8.
size_t utf8_char_len(const unsigned char* s, size_t n) {
  const unsigned c = s[0];
  if (c < 0x80) return 1;
  auto trail = [](unsigned char b) { return (b & 0xC0) == 0x80; };
  if ((c & 0xE0) == 0xC0) {
    if (n < 2 || !trail(s[1])) return 0;
    const uint32_t cp = (c & 0x1Fu) << 6 | (s[1] & 0x3Fu);
    return cp >= 0x80 ? 2 : 0;
  }
  if ((c & 0xF0) == 0xE0) {
    if (n < 3 || !trail(s[1]) || !trail(s[2])) return 0;
    const uint32_t cp = (c & 0x0Fu) << 12 | (s[1] & 0x3Fu) << 6 | (s[2] & 0x3Fu);
    return cp >= 0x800 && (cp < 0xD800 || cp >= 0xE000) ? 3 : 0;
  }
  if ((c & 0xF8) == 0xF0) {
    if (n < 4 || !trail(s[1]) || !trail(s[2]) || !trail(s[3])) return 0;
    const uint32_t cp =
        (c & 0x07u) << 18 | (s[1] & 0x3Fu) << 12 | (s[2] & 0x3Fu) << 6 | (s[3] & 0x3Fu);
    return cp >= 0x10000 && cp <= 0x10FFFF ? 4 : 0;
  }
  return 0;
}

// SentencePiece's string_util::OneCharLen (used on already-normalized text).
size_t one_char_len(unsigned char c) {
  static constexpr unsigned char kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[c >> 4];
}

int byte_of_piece(const std::string& p) {
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

struct Symbol {
  uint32_t start;  // byte offset in the normalized text
  uint32_t len;    // 0 once merged into its left neighbour
  int32_t prev, next;
  bool freeze;     // a UserDefined piece: never merged
};

struct Pair {
  float score;
  int32_t left, right;
  uint32_t size;  // byte length of the merged piece when queued
};

// Max-heap order: higher score first; among equal scores the leftmost pair.
struct PairLess {
  bool operator()(const Pair& a, const Pair& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

Tokenizer::Tokenizer(Vocab vocab) : vocab_(std::move(vocab)) {
  check_vocab(vocab_, "vocab");
  const int32_t n = n_vocab();
  for (int b = 0; b < 256; ++b) byte_ids_[b] = vocab_.unk;
  id_to_byte_.assign(n, -1);
  piece_to_id_.reserve(n);
  for (int32_t i = 0; i < n; ++i) {
    const std::string& p = vocab_.pieces[i];
    switch (vocab_.types[i]) {
      case TokenType::UserDefined:
        max_user_defined_len_ = std::max(max_user_defined_len_, p.size());
        piece_to_id_.emplace(p, i);
        break;
      case TokenType::Unused:
        has_unused_ = true;
        piece_to_id_.emplace(p, i);
        break;
      case TokenType::Normal:
        piece_to_id_.emplace(p, i);
        break;
      case TokenType::Byte: {
        const int b = byte_of_piece(p);  // check_vocab made sure it is one
        byte_ids_[b] = i;
        id_to_byte_[i] = static_cast<int16_t>(b);
        reserved_to_id_.emplace(p, i);
        break;
      }
      case TokenType::Unknown:
      case TokenType::Control:
        reserved_to_id_.emplace(p, i);
        break;
    }
  }
  split_words_ = true;
  for (const auto& [p, id] : piece_to_id_) {
    for (size_t pos = p.find(kSpaceSymbol, 1); pos != std::string::npos;
         pos = p.find(kSpaceSymbol, pos + 1)) {
      const size_t s = kSpaceSymbol.size();
      if (pos < s || p.compare(pos - s, s, kSpaceSymbol) != 0) {
        split_words_ = false;
        break;
      }
    }
    if (!split_words_) break;
  }
}

int32_t Tokenizer::piece_to_id(std::string_view piece) const {
  if (auto it = reserved_to_id_.find(piece); it != reserved_to_id_.end()) return it->second;
  if (auto it = piece_to_id_.find(piece); it != piece_to_id_.end()) return it->second;
  return vocab_.unk;
}

void Tokenizer::emit(
    std::string_view w, std::vector<int32_t>& out,
    const std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>>&
        rev_merge) const {
  const int32_t id = piece_to_id(w);
  const TokenType t = vocab_.types[id];
  if (t == TokenType::Unused) {
    // An Unused piece is split back into the two symbols that formed it.
    if (auto it = rev_merge.find(w); it != rev_merge.end()) {
      emit(it->second.first, out, rev_merge);
      emit(it->second.second, out, rev_merge);
      return;
    }
  } else if (t == TokenType::Unknown && vocab_.byte_fallback) {
    for (unsigned char c : w) out.push_back(byte_ids_[c]);
    return;
  }
  out.push_back(id);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos) const {
  std::vector<int32_t> out;
  if (add_bos && vocab_.bos >= 0) out.push_back(vocab_.bos);
  if (text.empty()) return out;
  if (text.size() > (size_t{1} << 30)) throw Error("tokenizer: text too long to encode");

  // Normalize (identity): dummy prefix, ' ' → U+2581, each byte that does not
  // start a well-formed UTF-8 character → U+FFFD.
  std::string norm;
  norm.reserve(text.size() + text.size() / 4 + 8);
  if (vocab_.add_space_prefix) norm.append(kSpaceSymbol);
  {
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    size_t i = 0, n = text.size();
    while (i < n) {
      const size_t len = utf8_char_len(s + i, n - i);
      if (len == 0) {
        norm.append(kReplacementChar);
        i += 1;
      } else if (s[i] == ' ') {
        norm.append(kSpaceSymbol);
        i += 1;
      } else {
        norm.append(text.data() + i, len);
        i += len;
      }
    }
  }

  // BPE on [begin, end) of the normalized text: the whole text, or one word
  // at a time when split_words_ (see tokenizer.h).
  std::vector<Symbol> sym;
  std::vector<Pair> heap;
  std::unordered_map<std::string_view, std::pair<std::string_view, std::string_view>> rev_merge;
  auto view = [&](int32_t i) { return std::string_view(norm.data() + sym[i].start, sym[i].len); };
  auto push = [&](Pair p) {
    heap.push_back(p);
    std::push_heap(heap.begin(), heap.end(), PairLess{});
  };
  auto maybe_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0 || sym[left].freeze || sym[right].freeze) return;
    const std::string_view merged(norm.data() + sym[left].start, sym[left].len + sym[right].len);
    auto it = piece_to_id_.find(merged);
    if (it == piece_to_id_.end()) return;
    push(Pair{vocab_.scores[it->second], left, right, static_cast<uint32_t>(merged.size())});
    if (has_unused_ && vocab_.types[it->second] == TokenType::Unused)
      rev_merge[merged] = {view(left), view(right)};
  };

  auto run = [&](size_t begin, size_t end) {
    // Split into characters (a UserDefined piece is taken whole and frozen).
    sym.clear();
    heap.clear();
    for (size_t i = begin; i < end;) {
      size_t len = 0;
      bool freeze = false;
      if (max_user_defined_len_ > 0) {
        for (size_t l = std::min(max_user_defined_len_, end - i); l > 0; --l) {
          auto it = piece_to_id_.find(std::string_view(norm.data() + i, l));
          if (it != piece_to_id_.end() && vocab_.types[it->second] == TokenType::UserDefined) {
            len = l;
            freeze = true;
            break;
          }
        }
      }
      if (len == 0) len = std::min(one_char_len(static_cast<unsigned char>(norm[i])), end - i);
      const int32_t idx = static_cast<int32_t>(sym.size());
      sym.push_back(Symbol{static_cast<uint32_t>(i), static_cast<uint32_t>(len), idx - 1,
                           i + len < end ? idx + 1 : -1, freeze});
      i += len;
    }

    for (int32_t i = 1; i < static_cast<int32_t>(sym.size()); ++i) maybe_add(i - 1, i);

    while (!heap.empty()) {
      std::pop_heap(heap.begin(), heap.end(), PairLess{});
      const Pair top = heap.back();
      heap.pop_back();
      Symbol& l = sym[top.left];
      Symbol& r = sym[top.right];
      // Stale: one side was merged away, or grew, since the pair was queued.
      if (l.len == 0 || r.len == 0 || l.len + r.len != top.size) continue;
      l.len += r.len;
      l.next = r.next;
      if (r.next >= 0) sym[r.next].prev = top.left;
      r.len = 0;
      maybe_add(l.prev, top.left);
      maybe_add(top.left, l.next);
    }

    for (int32_t i = 0; i >= 0; i = sym[i].next) emit(view(i), out, rev_merge);
  };

  out.reserve(out.size() + norm.size() / 3 + 1);
  if (!split_words_) {
    run(0, norm.size());
  } else {
    // Word starts: a U+2581 not preceded by another U+2581 (and not at 0).
    size_t begin = 0;
    const size_t s = kSpaceSymbol.size();
    for (size_t pos = norm.find(kSpaceSymbol, 1); pos != std::string::npos;
         pos = norm.find(kSpaceSymbol, pos + s)) {
      if (pos >= s && norm.compare(pos - s, s, kSpaceSymbol) == 0) continue;
      run(begin, pos);
      begin = pos;
    }
    run(begin, norm.size());
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  std::string out;
  std::string bytes;  // a run of byte pieces, decoded together
  auto flush_bytes = [&] {
    const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
    size_t i = 0;
    while (i < bytes.size()) {
      const size_t len = utf8_char_len(s + i, bytes.size() - i);
      if (len == 0) {
        out.append(kReplacementChar);
        i += 1;
      } else {
        out.append(bytes, i, len);
        i += len;
      }
    }
    bytes.clear();
  };
  // SentencePiece drops the dummy-prefix space: the leading U+2581 of the
  // first piece that produces text, and only that one.
  bool strip_pending = vocab_.add_space_prefix;
  for (int32_t id : ids) {
    if (id < 0 || id >= n_vocab())
      throw Error("tokenizer: token id " + std::to_string(id) + " out of range [0, " +
                  std::to_string(n_vocab()) + ")");
    const TokenType t = vocab_.types[id];
    if (t == TokenType::Byte) {
      bytes.push_back(static_cast<char>(id_to_byte_[id]));
      continue;
    }
    flush_bytes();
    if (t == TokenType::Control) continue;
    if (t == TokenType::Unknown) {
      out.append(kUnkSurface);
    } else {
      std::string_view p = vocab_.pieces[id];
      if (strip_pending && out.empty() && p.substr(0, kSpaceSymbol.size()) == kSpaceSymbol) {
        p.remove_prefix(kSpaceSymbol.size());
        strip_pending = false;
      }
      for (size_t pos = 0;;) {
        const size_t hit = p.find(kSpaceSymbol, pos);
        if (hit == std::string_view::npos) {
          out.append(p.substr(pos));
          break;
        }
        out.append(p.substr(pos, hit - pos));
        out.push_back(' ');
        pos = hit + kSpaceSymbol.size();
      }
    }
    if (!out.empty()) strip_pending = false;
  }
  flush_bytes();
  return out;
}

}  // namespace sg
