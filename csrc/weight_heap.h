// Memory for packed weight panels, on 2 MB transparent huge pages where Linux grants them.
//
// Why: a batch-1 forward streams every weight once (42.5 MB for MiniLM in fp32), one sequential read per panel.
// On 4 KB pages that read takes a TLB miss every 4 KB and the L2 stream prefetcher stops at each page boundary;
// on 2 MB pages neither happens. Measured on Zen 3, one core, MiniLM's batch-1 forward interleaved in one process
// (the same weights on 4 KB and on 2 MB pages, 1,200 dev queries): fp32 p50 3.47-3.54 -> 3.31-3.37 ms, int8 and
// bf16 1-2% faster. THP set to "madvise" (the common default) needs the range 2 MB-aligned and advised before it is
// touched, and one small allocation per linear would waste most of a huge page: so large blocks are cut from
// shared 32 MB chunks (bump allocation, a chunk returned to the OS when its last block is freed), small ones come
// from the ordinary heap. Without THP (other OSes, THP "never") the chunks are ordinary pages: the same results.
// Torch-free and pybind-free; thread-safe.
#pragma once

#include <cstddef>

namespace hlm {

// `bytes` of zeroed memory, 64-byte aligned; throws std::bad_alloc. Free with weight_free.
void* weight_alloc(size_t bytes);
void weight_free(void* p);

// Bytes of live weight blocks on huge-page-advised chunks (tests and diagnostics).
size_t weight_heap_chunk_bytes();

}  // namespace hlm
