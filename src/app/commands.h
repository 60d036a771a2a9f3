// Subcommands of the skingpt CLI. Each gets the arguments after its name and
// returns the process exit code; errors are thrown as sg::Error.
#pragma once

#include "formats/gguf.h"

namespace sg::app {

// --mmap of the commands that run a model: map the model files instead of
// reading them into memory (gguf::Residency).
inline constexpr const char* kMmapHelp =
    "map the model files instead of reading them into memory (less memory held by an idle "
    "process; generation can be several times slower on VMs, docs/performance.md)";
inline gguf::Residency residency(bool mmap) { return mmap ? gguf::Residency::Map : gguf::Residency::Load; }

int cmd_tokenize(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_bench(int argc, char** argv);
int cmd_synth(int argc, char** argv);
int cmd_ask(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_inspect(int argc, char** argv);
int cmd_convert(int argc, char** argv);
int cmd_quantize(int argc, char** argv);
int cmd_describe(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_calibrate(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_dataset(int argc, char** argv);
int cmd_serve(int argc, char** argv);

}  // namespace sg::app
