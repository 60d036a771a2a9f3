// ThreadPool: every index runs exactly once, ranges are covered exactly,
// exceptions reach the caller, nested and concurrent use does not deadlock.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <thread>
#include <vector>

#include "core/threads.h"

namespace {

TEST(ThreadPool, RunCallsEveryIndexOnce) {
  for (int n : {1, 2, 3, 5}) {
    sg::ThreadPool pool(n);
    EXPECT_EQ(pool.size(), n);
    std::vector<std::atomic<int>> hits(n);
    for (auto& h : hits) h = 0;
    pool.run([&](int t) { hits[t].fetch_add(1); });
    for (int t = 0; t < n; ++t) EXPECT_EQ(hits[t].load(), 1) << "thread " << t << " of " << n;
  }
}

TEST(ThreadPool, CallerIsThreadZeroAndWorkersParticipate) {
  sg::ThreadPool pool(2);
  // Index 0 always runs on the caller. An index whose worker has not started
  // yet may also run on the caller, but while the caller is busy the worker
  // must pick its index up itself.
  bool worker_ran = false;
  for (int it = 0; it < 100 && !worker_ran; ++it) {
    std::thread::id ids[2];
    pool.run([&](int t) {
      ids[t] = std::this_thread::get_id();
      if (t == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    });
    EXPECT_EQ(ids[0], std::this_thread::get_id());
    worker_ran = ids[1] != ids[0];
  }
  EXPECT_TRUE(worker_ran);
}

TEST(ThreadPool, RunsInParallelWhenWorkersAreFree) {
  // Index 1 waits for index 0's signal and vice versa; only possible if the
  // two indices run at the same time on different threads. Retry, since a
  // shared machine may not schedule the worker promptly: then the caller
  // runs index 1 itself, after index 0, and the handshake times out.
  sg::ThreadPool pool(2);
  bool parallel = false;
  for (int it = 0; it < 20 && !parallel; ++it) {
    std::atomic<int> stage{0};
    std::atomic<bool> ok{false};
    pool.run([&](int t) {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(50);
      if (t == 0) {
        while (stage.load() == 0 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
        if (stage.load() == 1) stage = 2;
      } else {
        stage = 1;
        while (stage.load() != 2 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
        ok = stage.load() == 2;
      }
    });
    parallel = ok.load();
  }
  EXPECT_TRUE(parallel);
}

TEST(ThreadPool, ParallelForCoversRangeExactlyOnce) {
  sg::ThreadPool pool(2);
  for (int64_t n : {0, 1, 2, 3, 7, 1000, 100003}) {
    std::vector<std::atomic<int>> hit(static_cast<size_t>(n));
    for (auto& h : hit) h = 0;
    std::atomic<int> calls{0};
    pool.parallel_for(n, [&](int64_t b, int64_t e, int t) {
      EXPECT_LT(b, e);
      EXPECT_GE(t, 0);
      EXPECT_LT(t, 2);
      calls++;
      for (int64_t i = b; i < e; ++i) hit[static_cast<size_t>(i)]++;
    });
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hit[static_cast<size_t>(i)].load(), 1) << "n=" << n << " i=" << i;
    EXPECT_EQ(calls.load(), n == 0 ? 0 : (n == 1 ? 1 : 2)) << n;
  }
}

TEST(ThreadPool, ManyShortJobsNoLostWakeups) {
  sg::ThreadPool pool(2);
  int64_t total = 0;
  for (int it = 0; it < 5000; ++it) {
    std::atomic<int64_t> s{0};
    pool.run([&](int t) { s += t + 1; });
    total += s.load();
  }
  EXPECT_EQ(total, 5000 * 3);
}

TEST(ThreadPool, WakesAfterWorkersFellAsleep) {
  sg::ThreadPool pool(2);
  for (int it = 0; it < 3; ++it) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // past the spin window
    std::atomic<int> s{0};
    const auto t0 = std::chrono::steady_clock::now();
    pool.run([&](int) { s++; });
    EXPECT_EQ(s.load(), 2);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  }
}

TEST(ThreadPool, ExceptionInWorkerReachesCaller) {
  sg::ThreadPool pool(2);
  std::atomic<int> finished{0};
  EXPECT_THROW(pool.run([&](int t) {
    if (t == 1) throw std::runtime_error("boom");
    finished++;
  }),
               std::runtime_error);
  EXPECT_EQ(finished.load(), 1);
  // The pool still works afterwards.
  std::atomic<int> s{0};
  pool.run([&](int) { s++; });
  EXPECT_EQ(s.load(), 2);
}

TEST(ThreadPool, ExceptionInCallerWaitsForWorkers) {
  sg::ThreadPool pool(2);
  std::atomic<bool> worker_done{false};
  try {
    pool.run([&](int t) {
      if (t == 0) throw std::logic_error("caller");
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      worker_done = true;
    });
    FAIL() << "no exception";
  } catch (const std::logic_error& e) {
    EXPECT_STREQ(e.what(), "caller");
  }
  EXPECT_TRUE(worker_done.load());  // run() returned only after the worker finished
}

TEST(ThreadPool, ExceptionFromParallelFor) {
  sg::ThreadPool pool(2);
  EXPECT_THROW(pool.parallel_for(100, [](int64_t b, int64_t, int) {
    if (b > 0) throw std::out_of_range("x");
  }),
               std::out_of_range);
}

TEST(ThreadPool, NestedRunDoesNotDeadlock) {
  sg::ThreadPool pool(2);
  std::atomic<int> inner{0};
  pool.run([&](int) { pool.run([&](int) { inner++; }); });
  EXPECT_EQ(inner.load(), 4);
}

TEST(ThreadPool, ConcurrentCallersAreSerialized) {
  sg::ThreadPool pool(2);
  std::atomic<int64_t> total{0};
  auto caller = [&] {
    for (int it = 0; it < 500; ++it) {
      std::atomic<int> s{0};
      pool.run([&](int) { s++; });
      total += s.load();
    }
  };
  std::thread a(caller), b(caller);
  a.join();
  b.join();
  EXPECT_EQ(total.load(), 2 * 500 * 2);
}

TEST(ThreadPool, SingleThreadPoolRunsInline) {
  sg::ThreadPool pool(1);
  std::thread::id id;
  pool.run([&](int t) {
    EXPECT_EQ(t, 0);
    id = std::this_thread::get_id();
  });
  EXPECT_EQ(id, std::this_thread::get_id());
  sg::ThreadPool clamped(0);  // clamped to one thread
  EXPECT_EQ(clamped.size(), 1);
}

TEST(ThreadPool, DestroyWhileIdleIsQuick) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    sg::ThreadPool pool(2);
    if (i % 2) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

}  // namespace
