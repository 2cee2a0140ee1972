// Dynamic batching scheduler core: torch-free, model-free, pybind-free C++17.
//
// It only decides batch membership and timing. A request is (id, token count, arrival, deadline);
// the caller (Python) owns futures and payloads and maps ids back to them.
//
// Batch-formation rule (the Python twin `hlm_engine/scheduler.py` implements the same rule, and the
// property tests in tests/scheduler check it):
//   1. Expire: every queued request with deadline <= now is removed and reported (never dispatched),
//      ordered by (deadline, submit order).
//   2. Ready: a batch is formed when the queue is non-empty and any of
//        closed | max_delay_us == 0 | queued requests >= max_batch_size |
//        queued tokens >= max_batch_tokens | now >= anchor.arrival + max_delay_us
//      where the anchor is the oldest queued request (first submitted). "Queue not full" is exactly
//      the case where the whole queue would fit in one batch, so waiting can still grow it.
//   3. Form: start from the anchor's length bucket, then the other non-empty buckets by distance
//      |b - b_anchor| (the shorter bucket first on ties). Within a bucket take requests in submit
//      order while they fit (sum of tokens <= max_batch_tokens, count <= max_batch_size); the first
//      one that does not fit ends that bucket, so submit order within a bucket is never inverted.
//   The anchor always rides in the batch it anchors: no request waits more than max_delay_us past
//   the moment it becomes the oldest (given a free worker).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <list>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace hlm {

// Status codes of submit(); the Python wrapper turns them into exceptions.
enum Status : int { kOk = 0, kQueueFull = 1, kDuplicate = 2, kBadTokens = 3, kClosed = 4 };

// Microseconds on the monotonic clock (CLOCK_MONOTONIC: the same clock as Python's time.monotonic).
int64_t now_us();

// Half-octave length buckets: 1, 2, 3, [4,5], [6,7], [8,11], [12,15], [16,23], ... so lengths in one
// bucket differ by at most 1.5x. Monotone in n; n < 4 maps to itself.
int length_bucket(int64_t n_tokens);

constexpr int kNumBuckets = 128;  // length_bucket(2^63 - 1) = 125

struct SchedulerConfig {
  int64_t max_batch_tokens;
  int64_t max_batch_size;
  int64_t max_delay_us;
  int64_t max_queued_requests;
  int64_t max_queued_tokens;
};

struct Batch {
  std::vector<int64_t> ids;      // dispatched requests, in formation order
  std::vector<int64_t> expired;  // requests whose deadline passed (fail them, never compute)
  void clear() { ids.clear(); expired.clear(); }
};

struct SchedulerStats {
  int64_t queued = 0, queued_tokens = 0;
  int64_t submitted = 0, rejected = 0, dispatched = 0, batches = 0, expired = 0, cancelled = 0, drained = 0;
  bool closed = false;
};

class Scheduler {
 public:
  explicit Scheduler(const SchedulerConfig& cfg);

  // now < 0 reads the clock. deadline_us < 0 means no deadline (absolute, same clock as now_us()).
  int submit(int64_t id, int64_t n_tokens, int64_t deadline_us, int64_t now);
  bool cancel(int64_t id);  // true if it was queued (and is now removed)

  // Non-blocking: expire, then form a batch only if one is ready at `now` (< 0: the clock).
  void poll(int64_t now, Batch* out);
  // Blocking: wait up to timeout_us (< 0: no limit) for a ready batch or an expired request.
  // Returns false once closed and empty; on timeout returns true with an empty `out`.
  bool next_batch(int64_t timeout_us, Batch* out);

  void close();                  // refuse new submits; queued requests become ready at once
  std::vector<int64_t> drain();  // remove and return every queued id, in submit order
  SchedulerStats stats() const;
  const SchedulerConfig& config() const { return cfg_; }

 private:
  struct Req {
    int64_t n_tokens, arrival, deadline;
    uint64_t seq;
    int bucket;
    std::list<int64_t>::iterator fifo_it, bucket_it;
  };
  using DeadlineKey = std::tuple<int64_t, uint64_t, int64_t>;  // (deadline, seq, id)

  bool ready_locked(int64_t now) const;
  void poll_locked(int64_t now, Batch* out);
  void form_locked(Batch* out);
  void remove_locked(std::unordered_map<int64_t, Req>::iterator it);
  int64_t wake_time_locked() const;  // earliest anchor timer or deadline; INT64_MAX if none

  SchedulerConfig cfg_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<int64_t, Req> reqs_;
  std::list<int64_t> fifo_;                       // every queued id, submit order
  std::vector<std::list<int64_t>> buckets_;       // per length bucket, submit order
  std::set<DeadlineKey> deadlines_;
  uint64_t next_seq_ = 0;
  bool closed_ = false;
  SchedulerStats st_;
};

}  // namespace hlm
