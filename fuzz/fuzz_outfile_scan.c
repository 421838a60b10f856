/* libFuzzer: reading an existing output file back (pipeline/outfile.c pf_outfile_scan, what the sink does at
 * start) on arbitrary bytes, with a small line limit so that long lines, torn tails and buffer growth are all
 * reached. Checks what the sink relies on: every line handed out ends with '\n' and ends where it says, the
 * lines tile the file from byte 0 up to the "good" end, and only a torn tail (no '\n') follows it.
 * Run: build-fuzz/fuzz/fuzz_outfile_scan -max_total_time=300 CORPUS_DIR (seed with a few .jsonl outputs) */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "pipeline/outfile.h"

typedef struct seen {
    const uint8_t *data;
    off_t next;   /* where the next line must start */
} seen;

static int on_line(const char *line, size_t len, off_t end, void *arg)
{
    seen *s = arg;
    if (len == 0 || line[len - 1] != '\n' || end != s->next + (off_t)len ||
        memcmp(line, s->data + s->next, len) != 0 || memchr(line, '\n', len - 1))
        abort();
    s->next = end;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int fd = -1;
    if (fd < 0 && (fd = memfd_create("output", 0)) < 0)
        return 0;
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size)
        return 0;
    size_t max_line = size ? (data[0] % 64) + 1 : 8;
    seen s = {data, 0};
    off_t good = -1;
    pf_err err;
    if (pf_outfile_scan(fd, "output.jsonl", max_line, on_line, &s, &good, &err) == 0) {
        if (good != s.next || good > (off_t)size || memchr(data + good, '\n', size - (size_t)good))
            abort();
        if (size - (size_t)good > max_line)   /* a longer torn tail is refused, not accepted */
            abort();
    }
    return 0;
}
