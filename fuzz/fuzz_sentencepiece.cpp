// libFuzzer target: the SentencePiece tokenizer.model reader, then encode and
// decode with whatever vocabulary it accepted. Any outcome but sg::Error or
// success (a crash, a sanitizer report, a hang) is a bug.
#include <algorithm>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    sg::Vocab v = sg::vocab_from_sentencepiece_bytes(data, size, "fuzz");
    sg::Tokenizer t(v);
    auto ids = t.encode(std::string_view(reinterpret_cast<const char*>(data), std::min<size_t>(size, 200)), true);
    (void)t.decode(ids);
  } catch (const sg::Error&) {
  }
  return 0;
}
