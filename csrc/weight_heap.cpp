// Huge-page-backed memory for packed weights (see weight_heap.h for the why).
#include "weight_heap.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace hlm {

namespace {

constexpr size_t kHuge = size_t{2} << 20;
constexpr size_t kChunk = size_t{32} << 20;  // 16 huge pages: a small model's weights in one or two chunks
constexpr size_t kLarge = size_t{64} << 10;  // blocks from here on go to chunks (weight panels; not biases)
constexpr size_t kHeader = 64;               // before every block: where it came from (keeps 64-byte alignment)

struct Chunk {
  uint8_t* base;
  size_t size, used;
  size_t live;  // blocks not yet freed
};

struct Header {
  Chunk* chunk;  // null: an ordinary heap block
  size_t size;   // the block's bytes, header included
};

std::mutex mu;
Chunk* current = nullptr;  // the chunk new blocks are cut from
size_t chunk_bytes = 0;    // live block bytes on chunks

size_t round_up(size_t v, size_t to) { return (v + to - 1) / to * to; }

#if defined(__linux__)
Chunk* map_chunk(size_t need) {
  const size_t size = round_up(need > kChunk ? need : kChunk, kHuge);
  // Over-map by one huge page, then trim both ends so the chunk starts on a 2 MB boundary.
  void* raw = mmap(nullptr, size + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw), base = round_up(start, kHuge);
  if (base > start) munmap(raw, base - start);
  const uintptr_t end = start + size + kHuge;  // > base + size: base is less than one huge page past start
  munmap(reinterpret_cast<void*>(base + size), end - base - size);
  madvise(reinterpret_cast<void*>(base), size, MADV_HUGEPAGE);  // advice only: refused -> 4 KB pages, same memory
  return new Chunk{reinterpret_cast<uint8_t*>(base), size, 0, 0};  // anonymous pages read as zero
}
void unmap_chunk(Chunk* c) {
  munmap(c->base, c->size);
  delete c;
}
#endif

}  // namespace

void* weight_alloc(size_t bytes) {
  const size_t need = kHeader + round_up(bytes > 0 ? bytes : 1, 64);
#if defined(__linux__)
  if (bytes >= kLarge) {
    std::lock_guard<std::mutex> lock(mu);
    if (current == nullptr || current->used + need > current->size) {
      Chunk* fresh = map_chunk(need);
      if (current != nullptr && current->live == 0) unmap_chunk(current);
      current = fresh;  // a retired chunk with live blocks goes when its last block is freed
    }
    uint8_t* block = current->base + current->used;
    current->used += need;
    current->live += 1;
    chunk_bytes += need;
    *reinterpret_cast<Header*>(block) = Header{current, need};
    return block + kHeader;  // never handed out before: still zero
  }
#endif
  void* block = std::aligned_alloc(64, need);
  if (block == nullptr) throw std::bad_alloc();
  std::memset(block, 0, need);
  *static_cast<Header*>(block) = Header{nullptr, need};
  return static_cast<uint8_t*>(block) + kHeader;
}

void weight_free(void* p) {
  if (p == nullptr) return;
  uint8_t* block = static_cast<uint8_t*>(p) - kHeader;
  const Header h = *reinterpret_cast<Header*>(block);
  Chunk* c = h.chunk;
  if (c == nullptr) {
    std::free(block);
    return;
  }
#if defined(__linux__)
  std::lock_guard<std::mutex> lock(mu);
  chunk_bytes -= h.size;
  if (--c->live == 0) {
    if (c == current) {
      c->used = 0;  // reuse it: its pages go back to the OS (a dropped model's memory) and read as zero again
      madvise(c->base, c->size, MADV_DONTNEED);
    } else {
      unmap_chunk(c);
    }
  }
#endif
}

size_t weight_heap_chunk_bytes() {
  std::lock_guard<std::mutex> lock(mu);
  return chunk_bytes;
}

}  // namespace hlm
