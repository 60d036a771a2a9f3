// skingpt-train: the libtorch trainer as its own executable, started by
// `skingpt train` (see cmd_train.cpp), so only training loads libtorch.
#include <cstdio>
#include <new>

#include "app/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  try {
    return sg::app::cmd_train(argc - 1, argv + 1);
  } catch (const sg::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "error: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}
