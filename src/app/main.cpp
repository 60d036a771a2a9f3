// skingpt: a local dermatology assistant (SkinGPT-4 architecture) on the CPU.
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "app/commands.h"
#include "core/error.h"

namespace {

struct Command {
  const char* name;
  int (*run)(int, char**);
  const char* summary;
};

const Command kCommands[] = {
    {"describe", sg::app::cmd_describe, "assess a skin photo: quality, findings, differential, red flags (a draft report)"},
    {"ask", sg::app::cmd_ask, "ask one question about a skin photo"},
    {"chat", sg::app::cmd_chat, "talk about a skin photo interactively"},
    {"inspect", sg::app::cmd_inspect, "run the pipeline on token ids and write tensors (exactness checks)"},
    {"generate", sg::app::cmd_generate, "generate text from a prompt with a llama GGUF"},
    {"tokenize", sg::app::cmd_tokenize, "print the token ids (or pieces) of a text"},
    {"bench", sg::app::cmd_bench, "measure prompt processing and generation speed, memory, bandwidth"},
    {"synth", sg::app::cmd_synth, "write a random-weight model file of any shape (for benchmarks)"},
    {"convert", sg::app::cmd_convert, "convert .pth/.bin/safetensors checkpoints into a model folder"},
    {"quantize", sg::app::cmd_quantize, "rewrite a GGUF with another weight type (f16, q8_0, q4_k_m, ...)"},
    {"eval", sg::app::cmd_eval, "measure the differential on a labelled split (metrics, plots, HTML)"},
    {"dataset", sg::app::cmd_dataset, "write skingpt-mini's training data (concepts, consultations, corpus)"},
    {"calibrate", sg::app::cmd_calibrate, "fit temperature and thresholds on a validation split (calibration.json)"},
    {"serve", sg::app::cmd_serve, "serve the web app and an OpenAI-compatible API on this machine (HTTP)"},
    {"train", sg::app::cmd_train, "train the model with libtorch (pretrain, SkinGPT-4 steps 1-2), export GGUF"},
};

void usage(FILE* out) {
  std::fprintf(out,
               "usage: skingpt <command> [options]\n\n"
               "A local dermatology assistant: everything runs on this machine.\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\nRun 'skingpt <command> --help' for a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const std::string name = argv[1];
  if (name == "-h" || name == "--help" || name == "help") {
    usage(stdout);
    return 0;
  }
  for (const auto& c : kCommands) {
    if (name != c.name) continue;
    try {
      return c.run(argc - 2, argv + 2);
    } catch (const sg::Error& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
    } catch (const std::bad_alloc&) {
      std::fprintf(stderr, "error: out of memory\n");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
    }
    return 1;
  }
  std::fprintf(stderr, "skingpt: unknown command '%s'\n\n", name.c_str());
  usage(stderr);
  return 2;
}
