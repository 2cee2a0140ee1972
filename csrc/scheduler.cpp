// Dynamic batching scheduler core; the rule is documented in scheduler.h.
#include "scheduler.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <stdexcept>
#include <string>

namespace hlm {

namespace {
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int64_t kMaxSleepUs = 3'600'000'000LL;  // waiters re-check at least hourly
}

int64_t now_us() {
  // steady_clock is CLOCK_MONOTONIC on Linux: deadlines computed in Python (time.monotonic) agree.
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch()).count();
}

int length_bucket(int64_t n) {
  if (n < 4) return static_cast<int>(n < 0 ? 0 : n);
  int k = 63 - __builtin_clzll(static_cast<unsigned long long>(n));  // floor(log2 n) >= 2
  return 2 * k + static_cast<int>((n >> (k - 1)) & 1);
}

Scheduler::Scheduler(const SchedulerConfig& cfg) : cfg_(cfg), buckets_(kNumBuckets) {
  if (cfg.max_batch_tokens < 1) throw std::invalid_argument("max_batch_tokens must be >= 1");
  if (cfg.max_batch_size < 1) throw std::invalid_argument("max_batch_size must be >= 1");
  if (cfg.max_delay_us < 0) throw std::invalid_argument("max_delay_us must be >= 0");
  if (cfg.max_queued_requests < 1) throw std::invalid_argument("max_queued_requests must be >= 1");
  if (cfg.max_queued_tokens < 1) throw std::invalid_argument("max_queued_tokens must be >= 1");
  reqs_.reserve(1024);
}

int Scheduler::submit(int64_t id, int64_t n_tokens, int64_t deadline_us, int64_t now) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return kClosed;
    if (n_tokens < 1 || n_tokens > cfg_.max_batch_tokens) return kBadTokens;
    if (reqs_.count(id)) return kDuplicate;
    const int64_t n = static_cast<int64_t>(reqs_.size());
    if (n + 1 > cfg_.max_queued_requests || st_.queued_tokens + n_tokens > cfg_.max_queued_tokens) {
      ++st_.rejected;
      return kQueueFull;
    }
    if (now < 0) now = now_us();
    // Wake waiters only when this submit changes what they wait for: the queue gets an anchor, the
    // batch becomes full, or an earlier deadline appears. Skipping the rest saves a futex per request.
    const bool was_full = n >= cfg_.max_batch_size || st_.queued_tokens >= cfg_.max_batch_tokens;
    wake = n == 0 || cfg_.max_delay_us == 0;
    const uint64_t seq = next_seq_++;
    const int b = length_bucket(n_tokens);
    auto& r = reqs_[id];
    r.n_tokens = n_tokens;
    r.arrival = now;
    r.deadline = deadline_us < 0 ? -1 : deadline_us;
    r.seq = seq;
    r.bucket = b;
    r.fifo_it = fifo_.insert(fifo_.end(), id);
    r.bucket_it = buckets_[b].insert(buckets_[b].end(), id);
    if (r.deadline >= 0) {
      if (deadlines_.empty() || r.deadline < std::get<0>(*deadlines_.begin())) wake = true;
      deadlines_.emplace(r.deadline, seq, id);
    }
    st_.queued_tokens += n_tokens;
    ++st_.submitted;
    const bool is_full = n + 1 >= cfg_.max_batch_size || st_.queued_tokens >= cfg_.max_batch_tokens;
    wake = wake || (is_full && !was_full);
  }
  if (wake) cv_.notify_all();
  return kOk;
}

void Scheduler::remove_locked(std::unordered_map<int64_t, Req>::iterator it) {
  Req& r = it->second;
  fifo_.erase(r.fifo_it);
  buckets_[r.bucket].erase(r.bucket_it);
  if (r.deadline >= 0) deadlines_.erase(DeadlineKey(r.deadline, r.seq, it->first));
  st_.queued_tokens -= r.n_tokens;
  reqs_.erase(it);
}

bool Scheduler::cancel(int64_t id) {
  // No notify: a waiter's timer can only get later when a request leaves, so it merely wakes early.
  std::lock_guard<std::mutex> lk(mu_);
  auto it = reqs_.find(id);
  if (it == reqs_.end()) return false;
  remove_locked(it);
  ++st_.cancelled;
  return true;
}

bool Scheduler::ready_locked(int64_t now) const {
  if (fifo_.empty()) return false;
  if (closed_ || cfg_.max_delay_us == 0) return true;
  if (static_cast<int64_t>(reqs_.size()) >= cfg_.max_batch_size) return true;
  if (st_.queued_tokens >= cfg_.max_batch_tokens) return true;
  return now - cfg_.max_delay_us >= reqs_.at(fifo_.front()).arrival;  // no overflow for huge delays
}

void Scheduler::form_locked(Batch* out) {
  const int anchor_bucket = reqs_.at(fifo_.front()).bucket;
  // Buckets by distance from the anchor's, the shorter one first on ties (anchor's own is first).
  int order[kNumBuckets];
  int n_order = 0;
  for (int d = 0; d < kNumBuckets; ++d) {
    const int lo = anchor_bucket - d, hi = anchor_bucket + d;
    if (lo < 0 && hi >= kNumBuckets) break;
    if (lo >= 0 && !buckets_[lo].empty()) order[n_order++] = lo;
    if (d > 0 && hi < kNumBuckets && !buckets_[hi].empty()) order[n_order++] = hi;
  }
  const size_t first = out->ids.size();
  int64_t tokens = 0;
  int64_t count = 0;
  for (int i = 0; i < n_order && count < cfg_.max_batch_size; ++i) {
    for (int64_t id : buckets_[order[i]]) {
      const int64_t n = reqs_.at(id).n_tokens;
      if (tokens + n > cfg_.max_batch_tokens) break;  // keeps submit order within the bucket
      out->ids.push_back(id);
      tokens += n;
      if (++count == cfg_.max_batch_size) break;
    }
  }
  for (size_t i = first; i < out->ids.size(); ++i) remove_locked(reqs_.find(out->ids[i]));
  st_.dispatched += count;
  ++st_.batches;
}

void Scheduler::poll_locked(int64_t now, Batch* out) {
  while (!deadlines_.empty() && std::get<0>(*deadlines_.begin()) <= now) {
    const int64_t id = std::get<2>(*deadlines_.begin());
    out->expired.push_back(id);
    remove_locked(reqs_.find(id));
    ++st_.expired;
  }
  if (ready_locked(now)) form_locked(out);
}

void Scheduler::poll(int64_t now, Batch* out) {
  std::lock_guard<std::mutex> lk(mu_);
  poll_locked(now < 0 ? now_us() : now, out);
}

int64_t Scheduler::wake_time_locked() const {
  int64_t t = kNever;
  if (!fifo_.empty()) {
    const int64_t a = reqs_.at(fifo_.front()).arrival;
    t = cfg_.max_delay_us > kNever - a ? kNever : a + cfg_.max_delay_us;
  }
  if (!deadlines_.empty()) t = std::min(t, std::get<0>(*deadlines_.begin()));
  return t;
}

bool Scheduler::next_batch(int64_t timeout_us, Batch* out) {
  std::unique_lock<std::mutex> lk(mu_);
  const int64_t start = now_us();
  const int64_t limit = (timeout_us < 0 || timeout_us > kNever - start) ? kNever : start + timeout_us;
  for (;;) {
    const int64_t now = now_us();
    poll_locked(now, out);
    if (!out->ids.empty() || !out->expired.empty()) return true;
    if (closed_ && fifo_.empty()) return false;
    if (now >= limit) return true;
    // Capped at an hour from now: a far-future deadline in nanoseconds would overflow the time_point.
    const int64_t wake = std::min({limit, wake_time_locked(), now + kMaxSleepUs});
    // now_us() counts steady_clock's epoch, so the absolute wake time maps back onto it exactly.
    cv_.wait_until(lk, std::chrono::steady_clock::time_point(std::chrono::microseconds(wake)));
  }
}

void Scheduler::close() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

std::vector<int64_t> Scheduler::drain() {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<int64_t> ids(fifo_.begin(), fifo_.end());
  for (int64_t id : ids) remove_locked(reqs_.find(id));
  st_.drained += static_cast<int64_t>(ids.size());
  return ids;
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  SchedulerStats s = st_;
  s.queued = static_cast<int64_t>(reqs_.size());
  s.closed = closed_;
  return s;
}

}  // namespace hlm
