// A tiny fork-join pool of std::threads for one query's forward on several cores.
//
// Why our own (not OpenMP's): torch's OpenMP threads live in the same process; a second OpenMP runtime's
// team, or torch's own, spinning on the same 2 cores made a 2-thread forward 3x slower. This pool is
// owned by one NativeEncoder and its workers run only our kernels. They wait for work by spinning a short
// while (hand-offs between the ~30 GEMMs of one forward cost ~1 us instead of a futex wake-up of 10-50 us)
// and then sleep on a condition variable (an idle server costs no CPU).
//
// run(chunks, fn) calls fn(chunk, thread) once for every chunk in [0, chunks); the calling thread
// (thread 0) and the workers (1..size()-1) claim chunks from one counter, so a worker the OS has not
// scheduled (a busy shared box) costs nothing but its share of the speed-up: the caller simply claims the
// remaining chunks itself. `thread` indexes per-thread scratch. fn must not throw. One run at a time:
// try_acquire() tells a concurrent caller that the pool is busy (it then runs on its own thread).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace hlm {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // threads >= 1; threads - 1 workers are started
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  void run(int chunks, const std::function<void(int, int)>& fn);

  // Exclusive use for one forward: true when acquired (release() after), false when another caller has it.
  bool try_acquire() { return !busy_.test_and_set(std::memory_order_acquire); }
  void release() { busy_.clear(std::memory_order_release); }

 private:
  void worker(int index);
  void claim(int thread);

  std::vector<std::thread> workers_;
  std::atomic_flag busy_ = ATOMIC_FLAG_INIT;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};  // bumped once per run: the workers' go signal
  std::atomic<bool> open_{false};        // the current run still accepts workers
  std::atomic<int> active_{0};           // workers inside the current run
  std::atomic<int> next_{0};             // next unclaimed chunk
  std::atomic<bool> stop_{false};
  int chunks_ = 0;
  const std::function<void(int, int)>* job_ = nullptr;
};

}  // namespace hlm
