// Subcommands of the skingpt CLI. Each gets the arguments after its name and
// returns the process exit code; errors are thrown as sg::Error.
#pragma once

namespace sg::app {

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
