// Fork-join pool with spin-then-sleep workers and chunk claiming (see thread_pool.h for the why).
#include "thread_pool.h"

#include <chrono>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define HLM_PAUSE() _mm_pause()
#else
#define HLM_PAUSE() ((void)0)
#endif

namespace hlm {

namespace {

// How long an idle worker spins before it sleeps: longer than the gap between two parallel steps of a
// forward (the caller's bookkeeping, ~5-50 us), far shorter than the gap between queries of a lightly loaded
// server, so an idle encoder costs no core.
constexpr auto kSpin = std::chrono::microseconds(300);

}  // namespace

ThreadPool::ThreadPool(int threads) {
  if (threads < 1) throw std::invalid_argument("ThreadPool: threads must be >= 1, got " + std::to_string(threads));
  workers_.reserve(threads - 1);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_.store(true);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::claim(int thread) {
  for (;;) {
    const int c = next_.fetch_add(1, std::memory_order_relaxed);
    if (c >= chunks_) return;
    (*job_)(c, thread);
  }
}

void ThreadPool::run(int chunks, const std::function<void(int, int)>& fn) {
  if (chunks <= 0) return;
  if (workers_.empty() || chunks == 1) {
    for (int c = 0; c < chunks; ++c) fn(c, 0);
    return;
  }
  job_ = &fn;
  chunks_ = chunks;
  next_.store(0, std::memory_order_relaxed);
  open_.store(true, std::memory_order_seq_cst);  // publishes job_ / chunks_ / next_ to workers that see it
  {
    // Bumped under the lock: a worker deciding to sleep re-checks the generation under the same lock, so
    // the notify below cannot fall between its check and its wait.
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_seq_cst);
  }
  wake_.notify_all();
  claim(0);
  // Close, then wait for the workers already inside (each finishing the chunk it claimed). A worker that
  // arrives after the close sees it and leaves without touching job_ (seq_cst: either it sees open_ false
  // or we see its active_ count).
  open_.store(false, std::memory_order_seq_cst);
  for (int spins = 0; active_.load(std::memory_order_seq_cst) != 0; ++spins) {
    if (spins < 4096) HLM_PAUSE();
    else std::this_thread::yield();  // a descheduled worker needs this core to finish its chunk
  }
  job_ = nullptr;
}

void ThreadPool::worker(int index) {
  uint64_t seen = 0;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    int spins = 0;
    uint64_t g;
    while ((g = generation_.load(std::memory_order_acquire)) == seen && !stop_.load(std::memory_order_relaxed)) {
      HLM_PAUSE();
      if (++spins % 64 == 0 && std::chrono::steady_clock::now() - t0 > kSpin) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen || stop_.load(); });
      }
    }
    if (stop_.load()) return;
    seen = g;
    active_.fetch_add(1, std::memory_order_seq_cst);
    if (open_.load(std::memory_order_seq_cst)) claim(index);
    active_.fetch_sub(1, std::memory_order_seq_cst);
  }
}

}  // namespace hlm
