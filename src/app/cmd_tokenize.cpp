#include <cstdio>

#include "app/args.h"
#include "app/commands.h"
#include "core/error.h"
#include "text/tokenizer.h"

namespace sg::app {

int cmd_tokenize(int argc, char** argv) {
  std::string model, text;
  bool pieces = false, bos = false;
  Args a("tokenize", "Print the token ids of TEXT separated by spaces (no BOS unless --bos).");
  a.option("-m,--model", &model, "a llama GGUF or a SentencePiece tokenizer.model");
  a.flag("--pieces", &pieces, "print the pieces instead of the ids");
  a.flag("--bos", &bos, "prepend the BOS token");
  a.positional("TEXT", &text, "the text to tokenize");
  if (!a.parse(argc, argv)) return 0;
  if (model.empty()) throw Error("tokenize: -m MODEL is required (a .gguf or tokenizer.model)");
  const Tokenizer tok(load_vocab(model));
  const auto ids = tok.encode(text, bos);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += pieces ? tok.piece(ids[i]) : std::to_string(ids[i]);
  }
  std::printf("%s\n", out.c_str());
  return 0;
}

}  // namespace sg::app
