/* malloc_tune - why: glibc serves a request of 128 KiB or more with its own mmap and, when it is freed, unmaps
 * it (or trims the heap top with brk). Every message of a 224 px job carries a 150 KB tensor (600 KB at 448 px,
 * 2.4 MB at 896), so each one cost a fresh mapping: page faults and zeroing of 37+ pages, then munmap. perf on
 * the producer of `bench_hub` (224 px, 20000 items): memmove + page faults + brk were ~30% of its time. With the
 * thresholds below the same buffers are reused from the heap: hub/relay throughput 41-42% -> 49-52% in the
 * same runs (the relay, which allocates nothing large, did not move). The glibc default grows its mmap threshold
 * only after a mapped chunk is freed, and a request of exactly that size is mapped again. The trim threshold is
 * 16 MiB, not more: with 128 MiB a producer that once held ~40 MB of small buffers kept them (RSS 45 -> 89 MB in
 * 1 of 3 1M-file runs). */
#include "malloc_tune.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

void pf_malloc_tune(void)
{
    const char *t = getenv("GLIBC_TUNABLES");
    if (t && strstr(t, "glibc.malloc."))
        return;
    mallopt(M_MMAP_THRESHOLD, 32 << 20);   /* glibc's own upper bound for its dynamic threshold */
    mallopt(M_TRIM_THRESHOLD, 16 << 20);
}
