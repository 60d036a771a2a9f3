// Tokenizer and vocabulary loaders against SentencePiece 0.1.97 and llama.cpp
// ground truth in shared/tokenizer/ (see its SOURCE.txt). Expected ids that
// are written out below were produced by python3-sentencepiece 0.1.97 on the
// same tokenizer.model (or on the modification the test describes).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "formats/gguf.h"
#include "test_util.h"
#include "text/tokenizer.h"
#include "text/vocab.h"

namespace {

using sg::Tokenizer;
using sg::TokenType;
using sg::Vocab;
using Ids = std::vector<int32_t>;

std::string tok_dir() { return (sg::test::shared_dir() / "tokenizer").string(); }
std::string model_path() { return tok_dir() + "/tokenizer.model"; }
std::string gguf_path() { return tok_dir() + "/ggml-vocab-llama-spm.gguf"; }

const Vocab& model_vocab() {
  static const Vocab v = sg::vocab_from_sentencepiece(model_path());
  return v;
}
const Vocab& gguf_vocab() {
  static const Vocab v = [] {
    auto f = sg::gguf::File::open(gguf_path());
    return sg::vocab_from_gguf(*f);
  }();
  return v;
}
const Tokenizer& model_tok() {
  static const Tokenizer t(model_vocab());
  return t;
}
const Tokenizer& gguf_tok() {
  static const Tokenizer t(gguf_vocab());
  return t;
}

struct Case {
  std::string text, decoded;
  Ids ids;
  std::vector<std::string> pieces;
};

const std::vector<Case>& cases() {
  static const std::vector<Case> cs = [] {
    auto j = nlohmann::json::parse(sg::test::read_bytes(tok_dir() + "/llama_spm_cases.json"));
    std::vector<Case> out;
    for (const auto& c : j) {
      out.push_back({c.at("text").get<std::string>(), c.at("decoded").get<std::string>(),
                     c.at("ids").get<Ids>(), c.at("pieces").get<std::vector<std::string>>()});
    }
    return out;
  }();
  return cs;
}

Ids with_bos(const Ids& ids) {
  Ids r{1};
  r.insert(r.end(), ids.begin(), ids.end());
  return r;
}

void check_cases(const Tokenizer& tok) {
  ASSERT_EQ(cases().size(), 174u);
  int n_ok = 0;
  for (const Case& c : cases()) {
    SCOPED_TRACE("text: \"" + c.text + "\"");
    const Ids got = tok.encode(c.text, false);
    EXPECT_EQ(got, c.ids);
    EXPECT_EQ(tok.encode(c.text, true), with_bos(c.ids));
    std::vector<std::string> pieces;
    for (int32_t id : c.ids) pieces.push_back(tok.piece(id));
    EXPECT_EQ(pieces, c.pieces);
    EXPECT_EQ(tok.decode(c.ids), c.decoded);
    Ids framed = with_bos(c.ids);
    framed.push_back(2);
    EXPECT_EQ(tok.decode(framed), c.decoded);  // control tokens are invisible
    n_ok += got == c.ids;
  }
  EXPECT_EQ(n_ok, 174);
}

TEST(Tokenizer, SpmCasesFromModel) { check_cases(model_tok()); }
TEST(Tokenizer, SpmCasesFromGguf) { check_cases(gguf_tok()); }

// llama.cpp's test-tokenizer-0 data: every string in .inp is followed by
// "\n__ggml_vocab_test__\n"; line i of .out holds its ids (none if empty).
void check_llamacpp(const Tokenizer& tok) {
  const std::string inp = sg::test::read_bytes(gguf_path() + ".inp");
  const std::string outp = sg::test::read_bytes(gguf_path() + ".out");
  const std::string delim = "\n__ggml_vocab_test__\n";
  std::vector<std::string> texts;
  size_t pos = 0;
  for (size_t hit; (hit = inp.find(delim, pos)) != std::string::npos; pos = hit + delim.size())
    texts.push_back(inp.substr(pos, hit - pos));
  EXPECT_EQ(pos, inp.size()) << "text after the last delimiter";
  std::vector<Ids> expected;
  std::istringstream os(outp);
  for (std::string line; std::getline(os, line);) {
    std::istringstream ls(line);
    Ids ids;
    for (int32_t x; ls >> x;) ids.push_back(x);
    expected.push_back(ids);
  }
  ASSERT_EQ(texts.size(), 46u);
  ASSERT_EQ(expected.size(), texts.size());
  int n_ok = 0;
  for (size_t i = 0; i < texts.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i) + ": \"" + texts[i] + "\"");
    const Ids got = tok.encode(texts[i], false);
    EXPECT_EQ(got, expected[i]);
    n_ok += got == expected[i];
    // None of these contain U+2581 or invalid UTF-8, so decoding round-trips.
    EXPECT_EQ(tok.decode(got), texts[i]);
  }
  EXPECT_EQ(n_ok, 46);
}

TEST(Tokenizer, LlamaCppVocabTestFromModel) { check_llamacpp(model_tok()); }
TEST(Tokenizer, LlamaCppVocabTestFromGguf) { check_llamacpp(gguf_tok()); }

TEST(Vocab, ModelAndGgufIdentical) {
  const Vocab& a = model_vocab();
  const Vocab& b = gguf_vocab();
  ASSERT_EQ(a.size(), 32000u);
  EXPECT_EQ(a.pieces, b.pieces);
  EXPECT_EQ(a.scores, b.scores);
  EXPECT_EQ(a.types, b.types);
  EXPECT_EQ(a.bos, b.bos);
  EXPECT_EQ(a.eos, b.eos);
  EXPECT_EQ(a.unk, b.unk);
  EXPECT_EQ(a.add_bos, b.add_bos);
  EXPECT_EQ(a.add_space_prefix, b.add_space_prefix);
  EXPECT_EQ(a.byte_fallback, b.byte_fallback);
  EXPECT_EQ(a.bos, 1);
  EXPECT_EQ(a.eos, 2);
  EXPECT_EQ(a.unk, 0);
  EXPECT_TRUE(a.add_space_prefix);
  EXPECT_TRUE(a.byte_fallback);
  EXPECT_EQ(std::count(a.types.begin(), a.types.end(), TokenType::Normal), 31741);
  EXPECT_EQ(std::count(a.types.begin(), a.types.end(), TokenType::Byte), 256);
  EXPECT_EQ(std::count(a.types.begin(), a.types.end(), TokenType::Control), 2);
  EXPECT_EQ(std::count(a.types.begin(), a.types.end(), TokenType::Unknown), 1);
  EXPECT_EQ(a.pieces[3], "<0x00>");
  EXPECT_EQ(a.pieces[258], "<0xFF>");
}

TEST(Vocab, LoadVocabPicksFormatByMagic) {
  const Vocab m = sg::load_vocab(model_path());
  const Vocab g = sg::load_vocab(gguf_path());
  EXPECT_EQ(m.pieces, model_vocab().pieces);
  EXPECT_EQ(g.pieces, gguf_vocab().pieces);
  EXPECT_THROW(sg::load_vocab(tok_dir() + "/no-such-file.model"), sg::Error);
}

TEST(Tokenizer, BosAndEmpty) {
  const Tokenizer& t = model_tok();
  EXPECT_EQ(t.encode("", false), Ids{});
  EXPECT_EQ(t.encode("", true), Ids{1});
  EXPECT_EQ(t.encode("Hello", false), (Ids{15043}));
  EXPECT_EQ(t.encode("Hello", true), (Ids{1, 15043}));
  EXPECT_EQ(t.decode({}), "");
  EXPECT_EQ(t.decode({1}), "");
  EXPECT_EQ(t.decode({1, 15043, 2}), "Hello");
  EXPECT_EQ(t.bos(), 1);
  EXPECT_EQ(t.eos(), 2);
  EXPECT_EQ(t.unk(), 0);
  EXPECT_EQ(t.n_vocab(), 32000);
  // A vocabulary without bos adds nothing.
  Vocab v = model_vocab();
  v.bos = -1;
  const Tokenizer nb(v);
  EXPECT_EQ(nb.encode("Hello", true), (Ids{15043}));
  EXPECT_EQ(nb.encode("", true), Ids{});
}

TEST(Tokenizer, Conventions) {
  const Tokenizer& t = model_tok();
  EXPECT_EQ(t.encode(" ", false), (Ids{259}));
  EXPECT_EQ(t.encode("\t", false), (Ids{29871, 12}));
  EXPECT_EQ(t.encode(" Hello", false), (Ids{29871, 15043}));
  EXPECT_EQ(t.encode("  Hello", false), (Ids{259, 15043}));
  EXPECT_EQ(t.encode("###", false), (Ids{835}));
  EXPECT_EQ(t.encode("a ###", false), (Ids{263, 835}));
  EXPECT_EQ(t.encode("a###", false), (Ids{263, 2277, 29937}));
  EXPECT_EQ(t.encode("\n###", false), (Ids{29871, 13, 2277, 29937}));
  // No special-token parsing of text.
  EXPECT_EQ(t.encode("<s>", false), (Ids{529, 29879, 29958}));
  EXPECT_EQ(t.encode("</s>", false), (Ids{1533, 29879, 29958}));
  // A literal U+2581 is read as a space.
  EXPECT_EQ(t.encode("\xE2\x96\x81", false), (Ids{259}));
  EXPECT_EQ(t.encode("a\xE2\x96\x81" "b", false), (Ids{263, 289}));
  EXPECT_EQ(t.encode("Hello\xE2\x96\x81", false), (Ids{15043, 29871}));
  // Byte fallback for a character without a piece.
  EXPECT_EQ(t.encode("\xF0\x9F\xA6\x99", false), (Ids{29871, 243, 162, 169, 156}));  // 🦙
  // Without the dummy prefix.
  Vocab v = model_vocab();
  v.add_space_prefix = false;
  const Tokenizer np(v);
  EXPECT_EQ(np.encode("Hello world", false), (Ids{10994, 3186}));
  EXPECT_EQ(np.decode({29871, 15043}), "  Hello");
}

TEST(Tokenizer, InvalidUtf8IsReplacementChar) {
  // SentencePiece's normalizer turns each byte that does not start a
  // well-formed character into U+FFFD (piece 30140, "��" is 26308).
  const Tokenizer& t = model_tok();
  EXPECT_EQ(t.encode("\xFF", false), (Ids{29871, 30140}));
  EXPECT_EQ(t.encode("a\x80" "b", false), (Ids{263, 30140, 29890}));
  EXPECT_EQ(t.encode("\xC3", false), (Ids{29871, 30140}));
  EXPECT_EQ(t.encode("\xC3(", false), (Ids{29871, 30140, 29898}));
  EXPECT_EQ(t.encode("\xE2\x96", false), (Ids{29871, 26308}));
  EXPECT_EQ(t.encode("\xED\xA0\x80", false), (Ids{29871, 26308, 30140}));  // a surrogate
  EXPECT_EQ(t.encode("\xEF\xBF\xBD", false), (Ids{29871, 30140}));
  EXPECT_EQ(gguf_tok().encode("a\x80" "b", false), (Ids{263, 30140, 29890}));
}

TEST(Tokenizer, DecodeRules) {
  const Tokenizer& t = model_tok();
  EXPECT_EQ(t.decode({29871}), "");
  EXPECT_EQ(t.decode({29871, 29871}), " ");
  EXPECT_EQ(t.decode({1, 29871, 29871}), " ");
  EXPECT_EQ(t.decode({2, 29871}), "");
  EXPECT_EQ(t.decode({29871, 1, 263}), " a");
  EXPECT_EQ(t.decode({0}), " \xE2\x81\x87 ");
  EXPECT_EQ(t.decode({0, 29871}), " \xE2\x81\x87  ");
  EXPECT_EQ(t.decode({29871, 0}), " \xE2\x81\x87 ");
  EXPECT_EQ(t.decode({0, 0}), " \xE2\x81\x87  \xE2\x81\x87 ");
  // Byte pieces: reassembled; text from bytes keeps a later ▁ as a space.
  EXPECT_EQ(t.decode({3 + 'a', 29871}), "a ");
  EXPECT_EQ(t.decode({29871, 3 + 'a'}), "a");
  EXPECT_EQ(t.decode({243, 162, 169, 156}), "\xF0\x9F\xA6\x99");
  EXPECT_EQ(t.decode({229, 153, 132}), "\xE2\x96\x81");  // U+2581 spelled in bytes stays
  EXPECT_EQ(t.decode({229, 153, 132, 263}), "\xE2\x96\x81 a");
  // Each byte of a broken sequence is one U+FFFD.
  EXPECT_EQ(t.decode({229}), "\xEF\xBF\xBD");
  EXPECT_EQ(t.decode({229, 153}), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(t.decode({243, 162, 263}), "\xEF\xBF\xBD\xEF\xBF\xBD a");
  EXPECT_THROW(t.decode({32000}), sg::Error);
  EXPECT_THROW(t.decode({-1}), sg::Error);
}

TEST(Tokenizer, PieceToId) {
  const Tokenizer& t = model_tok();
  EXPECT_EQ(t.piece_to_id("\xE2\x96\x81Hello"), 15043);
  EXPECT_EQ(t.piece_to_id("<s>"), 1);
  EXPECT_EQ(t.piece_to_id("<0x0A>"), 13);
  EXPECT_EQ(t.piece_to_id("no such piece here"), 0);
}

// Unused pieces are merged through and then split back; UserDefined pieces are
// taken whole and never merged. Expected ids from SentencePiece 0.1.97 on the
// Llama-2 model with ▁the (278) and ▁image (1967) made UNUSED and Img (25518)
// and ing (292) made USER_DEFINED.
TEST(Tokenizer, UnusedAndUserDefinedPieces) {
  Vocab v = model_vocab();
  ASSERT_EQ(v.pieces[278], "\xE2\x96\x81the");
  ASSERT_EQ(v.pieces[1967], "\xE2\x96\x81image");
  ASSERT_EQ(v.pieces[25518], "Img");
  ASSERT_EQ(v.pieces[292], "ing");
  v.types[278] = TokenType::Unused;
  v.types[1967] = TokenType::Unused;
  v.types[25518] = TokenType::UserDefined;
  v.types[292] = TokenType::UserDefined;
  const Tokenizer t(v);
  EXPECT_EQ(t.encode("the image", false), (Ids{266, 29872, 527, 482}));
  EXPECT_EQ(t.encode("Give the following image: <Img>ImageContent</Img>", false),
            (Ids{25538, 266, 29872, 1101, 292, 527, 482, 29901, 529, 25518, 29958, 2940, 3916, 829,
                 25518, 29958}));
  EXPECT_EQ(t.encode("theImg thesis Imgs images", false),
            (Ids{266, 29872, 25518, 266, 6656, 29871, 25518, 29879, 4558}));
  EXPECT_EQ(t.encode("bathe the them", false), (Ids{17152, 354, 266, 29872, 963}));
  EXPECT_EQ(t.encode(" the", false), (Ids{29871, 266, 29872}));
  EXPECT_EQ(t.encode("singing things", false), (Ids{269, 292, 292, 266, 292, 29879}));
  EXPECT_EQ(t.encode("kingImg ringing", false), (Ids{413, 292, 25518, 364, 292, 292}));
  // The unmodified vocabulary for comparison.
  EXPECT_EQ(model_tok().encode("singing things", false), (Ids{23623, 2712}));
}

// With a piece that holds U+2581 after another character, encode cannot work
// word by word and runs the BPE over the whole text; the added piece cannot
// occur in these texts, so every result must stay the same.
TEST(Tokenizer, WholeTextPathGivesSameIds) {
  Vocab v = model_vocab();
  v.pieces.push_back("\x01\xE2\x96\x81");
  v.scores.push_back(-1e9f);
  v.types.push_back(TokenType::Normal);
  const Tokenizer t(v);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(t.encode(c.text, false), c.ids);
  }
  EXPECT_EQ(t.encode("\x01 ", false), (Ids{29871, 32000}));
}

TEST(Tokenizer, LongInputIsFast) {
  const Tokenizer& t = model_tok();
  // ~100 KB of prompt-like text, and 100 KB without any space (one word).
  std::string prose;
  for (size_t i = 0; prose.size() < 100 * 1024; ++i) {
    const Case& c = cases()[i % cases().size()];
    if (c.text == c.decoded) prose += c.text + " ";  // (not the U+2581 ones: they do not round-trip)
  }
  const std::string word(100 * 1024, 'a');
  for (const std::string* s : {static_cast<const std::string*>(&prose), &word}) {
    const auto t0 = std::chrono::steady_clock::now();
    const Ids ids = t.encode(*s, true);
    const double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_LT(ms, 2000.0) << "encoding " << s->size() << " bytes took " << ms << " ms";
    EXPECT_EQ(t.decode(ids), *s);
  }
  // Word-by-word BPE (the fast path) equals BPE over the whole text: a piece
  // holding "\x01▁" forces the whole-text path without changing any result.
  Vocab v = model_vocab();
  v.pieces.push_back("\x01\xE2\x96\x81");
  v.scores.push_back(-1e9f);
  v.types.push_back(TokenType::Normal);
  const Tokenizer whole(v);
  EXPECT_EQ(whole.encode(prose, false), t.encode(prose, false));
}

// ---------------------------------------------------------------------------
// The SentencePiece reader on hand-made and damaged files.

std::string varint(uint64_t x) {
  std::string s;
  do {
    uint8_t b = x & 0x7f;
    x >>= 7;
    s.push_back(static_cast<char>(b | (x ? 0x80 : 0)));
  } while (x);
  return s;
}
std::string key(uint32_t field, uint32_t wire) { return varint(uint64_t{field} << 3 | wire); }
std::string len_field(uint32_t field, const std::string& payload) {
  return key(field, 2) + varint(payload.size()) + payload;
}
std::string int_field(uint32_t field, int64_t v) {
  return key(field, 0) + varint(static_cast<uint64_t>(v));
}
std::string piece_msg(const std::string& piece, float score, int type) {
  uint32_t bits;
  std::memcpy(&bits, &score, 4);
  std::string s = len_field(1, piece) + key(2, 5);
  for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>(bits >> (8 * i)));
  if (type != 1) s += int_field(3, type);
  return len_field(1, s);
}

struct MiniModel {
  int model_type = 2;
  bool remove_extra_ws = false;
  bool byte_fallback = false;
  bool with_unk = true;
  int64_t bos_id = 1;
  std::string build() const {
    std::string m;
    m += piece_msg(with_unk ? "<unk>" : "<pad>", 0, with_unk ? 2 : 3);
    m += piece_msg("<s>", 0, 3);
    m += piece_msg("</s>", 0, 3);
    m += piece_msg("\xE2\x96\x81", -1, 1);
    m += piece_msg("a", -2, 1);
    m += piece_msg("b", -3, 1);
    m += piece_msg("\xE2\x96\x81" "a", -0.5f, 1);
    m += piece_msg("ab", -0.25f, 1);
    std::string trainer = int_field(3, model_type) + len_field(2, "prefix") +
                          int_field(35, byte_fallback) + int_field(41, bos_id) + int_field(42, 2);
    m += len_field(2, trainer);
    m += len_field(3, len_field(1, "identity") + int_field(4, remove_extra_ws));
    m += len_field(99, "unknown fields are skipped");
    return m;
  }
};

Vocab parse(const std::string& bytes) {
  return sg::vocab_from_sentencepiece_bytes(reinterpret_cast<const uint8_t*>(bytes.data()),
                                            bytes.size(), "mini.model");
}

std::string error_of(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const sg::Error& e) {
    return e.what();
  }
  return "";
}

TEST(SentencePieceReader, HandMadeModel) {
  MiniModel mm;
  mm.bos_id = -1;  // a negative int32 is a 10-byte varint
  const Vocab v = parse(mm.build());
  ASSERT_EQ(v.size(), 8u);
  EXPECT_EQ(v.pieces[6], "\xE2\x96\x81" "a");
  EXPECT_EQ(v.scores[6], -0.5f);
  EXPECT_EQ(v.types[0], TokenType::Unknown);
  EXPECT_EQ(v.types[1], TokenType::Control);
  EXPECT_EQ(v.types[4], TokenType::Normal);
  EXPECT_EQ(v.bos, -1);
  EXPECT_EQ(v.eos, 2);
  EXPECT_EQ(v.unk, 0);
  EXPECT_TRUE(v.add_space_prefix);  // proto default
  EXPECT_FALSE(v.byte_fallback);
  const Tokenizer t(v);
  // "▁ab▁ba": ab (-0.25) beats ▁a (-0.5); without byte fallback "c" is <unk>.
  EXPECT_EQ(t.encode("ab ba", true), (Ids{3, 7, 3, 5, 4}));
  EXPECT_EQ(t.encode("ac", false), (Ids{6, 0}));
  EXPECT_EQ(t.decode({6, 0}), "a \xE2\x81\x87 ");
}

TEST(SentencePieceReader, RefusesWhatItCannotDo) {
  MiniModel mm;
  EXPECT_EQ(error_of(mm.build()), "");
  mm.model_type = 1;
  EXPECT_NE(error_of(mm.build()).find("mini.model: SentencePiece model type is UNIGRAM"),
            std::string::npos);
  mm = MiniModel{};
  mm.remove_extra_ws = true;
  EXPECT_NE(error_of(mm.build()).find("remove_extra_whitespaces"), std::string::npos);
  mm = MiniModel{};
  mm.with_unk = false;
  EXPECT_NE(error_of(mm.build()).find("no unknown piece"), std::string::npos);
  mm = MiniModel{};
  mm.byte_fallback = true;
  EXPECT_NE(error_of(mm.build()).find("byte piece <0x00> is missing"), std::string::npos);
  mm = MiniModel{};
  mm.bos_id = 8;
  EXPECT_NE(error_of(mm.build()).find("bos id 8 out of range"), std::string::npos);
  // A piece defined twice.
  EXPECT_NE(error_of(mm.build() + piece_msg("a", 0, 1)).find("already defined"), std::string::npos);
}

TEST(SentencePieceReader, TruncatedModelIsAnError) {
  const std::string full = sg::test::read_bytes(model_path());
  ASSERT_NO_THROW(parse(full));
  std::vector<size_t> lengths = {0, 1, 2, 3, 5, 10, 100, 1000, full.size() / 2};
  for (size_t k = 1; k <= 600; ++k) lengths.push_back(full.size() - k);  // trainer/normalizer
  std::mt19937 rng(7);
  for (int k = 0; k < 100; ++k) lengths.push_back(rng() % full.size());
  for (size_t n : lengths) {
    SCOPED_TRACE("length " + std::to_string(n));
    EXPECT_THROW(parse(full.substr(0, n)), sg::Error);
  }
  // Through the file API as well.
  sg::test::TempDir dir;
  const auto path = (dir / "cut.model").string();
  {
    std::ofstream f(path, std::ios::binary);
    f.write(full.data(), static_cast<std::streamsize>(full.size() - 7));
  }
  try {
    sg::vocab_from_sentencepiece(path);
    ADD_FAILURE() << "truncated file accepted";
  } catch (const sg::Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
  }
  EXPECT_THROW(sg::load_vocab(path), sg::Error);
}

TEST(SentencePieceReader, GarbageIsAnErrorNeverACrash) {
  std::mt19937 rng(11);
  for (int k = 0; k < 200; ++k) {
    std::string junk(1 + rng() % 2000, '\0');
    for (char& c : junk) c = static_cast<char>(rng());
    EXPECT_THROW(parse(junk), sg::Error);
  }
  // Length fields that point far past the end.
  EXPECT_THROW(parse(key(1, 2) + varint(uint64_t{1} << 62)), sg::Error);
  EXPECT_THROW(parse(key(1, 2) + "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), sg::Error);
  EXPECT_THROW(parse(key(1, 3)), sg::Error);  // groups are refused
  // Damaged copies of the real file: either refused with sg::Error or still a
  // consistent vocabulary; nothing else may escape.
  const std::string full = sg::test::read_bytes(model_path());
  int refused = 0;
  for (int k = 0; k < 60; ++k) {
    std::string bad = full;
    for (int j = 0; j < 4; ++j) bad[rng() % bad.size()] = static_cast<char>(rng());
    // Most damage lands in piece strings and scores; also hit the specs.
    bad[bad.size() - 1 - rng() % 400] = static_cast<char>(rng());
    try {
      Vocab v = parse(bad);
      Tokenizer t(v);
      (void)t.encode("Hello world", true);
    } catch (const sg::Error&) {
      ++refused;
    }
  }
  SUCCEED() << refused << " of 60 damaged files refused";
}

TEST(Vocab, GgufWithOtherTokenizerIsRefused) {
  sg::test::TempDir dir;
  const auto path = (dir / "gpt2.gguf").string();
  {
    sg::gguf::Writer w(path);
    w.set("general.architecture", sg::gguf::Value::str("llama"));
    w.set("tokenizer.ggml.model", sg::gguf::Value::str("gpt2"));
    w.set("tokenizer.ggml.tokens", sg::gguf::Value::arr_str({"a", "b"}));
    w.finish();
  }
  try {
    sg::load_vocab(path);
    ADD_FAILURE() << "gpt2 tokenizer accepted";
  } catch (const sg::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ": tokenizer.ggml.model is 'gpt2'"),
              std::string::npos)
        << e.what();
  }
  // A llama vocab without scores.
  const auto path2 = (dir / "noscores.gguf").string();
  {
    sg::gguf::Writer w(path2);
    w.set("tokenizer.ggml.model", sg::gguf::Value::str("llama"));
    w.set("tokenizer.ggml.tokens", sg::gguf::Value::arr_str({"<unk>", "a"}));
    w.finish();
  }
  EXPECT_THROW(sg::load_vocab(path2), sg::Error);
}

}  // namespace
