// A fixed pool of worker threads for data-parallel loops. Workers spin briefly
// before sleeping, because a decode step issues hundreds of short parallel
// loops and a condition-variable wake-up per loop would dominate.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>

namespace sg {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);  // n_threads >= 1; the caller is thread 0
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // Calls fn(i) once for every thread index i in [0, size()) and waits; the
  // caller runs index 0. An index whose worker has not started on it by the
  // time the caller is done with its own work runs on the caller instead, so
  // a worker the OS has not scheduled (busy machine) never stalls the call.
  // Exceptions thrown by fn are rethrown here (the first one) after every
  // index has finished. A nested run() from inside fn runs serially.
  void run(const std::function<void(int)>& fn);
  // Splits [0, n) into contiguous chunks and calls fn(begin, end, thread).
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn);

 private:
  struct Impl;
  int n_threads_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sg
