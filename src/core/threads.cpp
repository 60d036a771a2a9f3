#include "core/threads.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SG_CPU_RELAX() _mm_pause()
#else
#define SG_CPU_RELAX() std::this_thread::yield()
#endif

namespace sg {

namespace {
// Set while a thread executes a job of some pool: a nested run() from inside a
// job executes serially instead of deadlocking on the busy workers.
thread_local bool t_in_pool_job = false;

using Clock = std::chrono::steady_clock;
// How long a worker spins waiting for the next job before it sleeps. A decode
// step issues its parallel loops a few tens of microseconds apart.
constexpr auto kSpinTime = std::chrono::microseconds(200);
}  // namespace

// Protocol. Each run() is one generation g. Slot i (one per thread index)
// holds (g << 1) | claimed. A worker that sees generation g tries to claim
// its slot with a CAS; the caller runs slot 0 and then claims every slot a
// worker has not claimed yet and runs it itself, so run() never waits for a
// worker the OS has not scheduled (the machines this runs on are shared).
// The caller then waits only for slots that workers did claim: "active"
// counts workers between their claim attempt and the end of their slot.
struct ThreadPool::Impl {
  explicit Impl(int n) : slots(static_cast<size_t>(n)) {}

  std::vector<std::thread> workers;
  std::mutex run_mutex;  // one run() at a time per pool

  std::atomic<uint64_t> generation{0};
  std::atomic<bool> stop{false};
  const std::function<void(int)>* job = nullptr;
  std::vector<std::atomic<uint64_t>> slots;
  std::atomic<int> active{0};

  std::mutex sleep_mutex;
  std::condition_variable sleep_cv;
  std::atomic<int> sleepers{0};

  std::mutex error_mutex;
  std::exception_ptr error;

  void record_error() {
    std::lock_guard<std::mutex> lk(error_mutex);
    if (!error) error = std::current_exception();
  }

  void call(int index) {
    t_in_pool_job = true;
    try {
      (*job)(index);
    } catch (...) {
      record_error();
    }
    t_in_pool_job = false;
  }

  bool claim(int index, uint64_t g) {
    uint64_t expected = g << 1;
    return slots[static_cast<size_t>(index)].compare_exchange_strong(expected, (g << 1) | 1,
                                                                     std::memory_order_acq_rel);
  }

  void worker_main(int index) {
    uint64_t seen = 0;
    for (;;) {
      // Spin for a short while, then sleep on the condition variable.
      uint64_t g = generation.load(std::memory_order_acquire);
      if (g == seen && !stop.load(std::memory_order_acquire)) {
        const auto deadline = Clock::now() + kSpinTime;
        int iter = 0;
        while ((g = generation.load(std::memory_order_acquire)) == seen && !stop.load(std::memory_order_relaxed)) {
          SG_CPU_RELAX();
          if ((++iter & 63) == 0 && Clock::now() > deadline) break;
        }
        if (g == seen && !stop.load(std::memory_order_acquire)) {
          std::unique_lock<std::mutex> lk(sleep_mutex);
          sleepers.fetch_add(1, std::memory_order_seq_cst);
          sleep_cv.wait(lk, [&] {
            return generation.load(std::memory_order_seq_cst) != seen || stop.load(std::memory_order_seq_cst);
          });
          sleepers.fetch_sub(1, std::memory_order_relaxed);
          g = generation.load(std::memory_order_acquire);
        }
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = g;
      active.fetch_add(1, std::memory_order_seq_cst);
      if (claim(index, g)) call(index);
      active.fetch_sub(1, std::memory_order_release);
    }
  }

  void wake_all() {
    if (sleepers.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lk(sleep_mutex); }
      sleep_cv.notify_all();
    }
  }
};

ThreadPool::ThreadPool(int n_threads)
    : n_threads_(std::max(1, n_threads)), impl_(std::make_unique<Impl>(std::max(1, n_threads))) {
  impl_->workers.reserve(static_cast<size_t>(n_threads_ - 1));
  for (int i = 1; i < n_threads_; ++i) impl_->workers.emplace_back([this, i] { impl_->worker_main(i); });
}

ThreadPool::~ThreadPool() {
  impl_->stop.store(true, std::memory_order_seq_cst);
  {
    std::lock_guard<std::mutex> lk(impl_->sleep_mutex);
  }
  impl_->sleep_cv.notify_all();
  for (auto& t : impl_->workers) t.join();
}

void ThreadPool::run(const std::function<void(int)>& fn) {
  if (n_threads_ == 1 || t_in_pool_job) {
    // Serial execution: single thread, or a nested call from inside a job.
    for (int i = 0; i < n_threads_; ++i) fn(i);
    return;
  }
  std::lock_guard<std::mutex> run_lock(impl_->run_mutex);
  Impl& s = *impl_;
  s.job = &fn;
  s.error = nullptr;
  const uint64_t g = s.generation.load(std::memory_order_relaxed) + 1;
  for (auto& slot : s.slots) slot.store(g << 1, std::memory_order_relaxed);
  s.generation.store(g, std::memory_order_seq_cst);
  s.wake_all();

  s.call(0);
  // Slots no worker has picked up yet run here, on the caller.
  for (int i = 1; i < n_threads_; ++i)
    if (s.claim(i, g)) s.call(i);

  // Wait for the workers that did claim a slot: spin, then yield the CPU.
  int iter = 0;
  while (s.active.load(std::memory_order_acquire) != 0) {
    if (++iter < 4096)
      SG_CPU_RELAX();
    else
      std::this_thread::yield();
  }
  s.job = nullptr;
  if (s.error) {
    std::exception_ptr e = s.error;
    s.error = nullptr;
    std::rethrow_exception(e);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t, int)>& fn) {
  if (n <= 0) return;
  const int nt = static_cast<int>(std::min<int64_t>(n_threads_, n));
  if (nt == 1) {
    fn(0, n, 0);
    return;
  }
  // One pointer of captures: std::function keeps it inline (no allocation).
  struct Ctx {
    int64_t n;
    int nt;
    const std::function<void(int64_t, int64_t, int)>* fn;
  } ctx{n, nt, &fn};
  run([c = &ctx](int t) {
    if (t >= c->nt) return;
    const int64_t b = c->n * t / c->nt, e = c->n * (t + 1) / c->nt;
    if (b < e) (*c->fn)(b, e, t);
  });
}

}  // namespace sg
