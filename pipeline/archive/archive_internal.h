/* archive_internal.h - what the shard lister (archive_list.c) and the member reader (archive_read.c) share:
 * opening a shard with exactly the formats and filters we accept, the per-entry checks, bounded reads. */
#ifndef PF_PIPELINE_ARCHIVE_INTERNAL_H
#define PF_PIPELINE_ARCHIVE_INTERNAL_H

#include <archive.h>
#include <archive_entry.h>

#include "pipeline/archive/archive.h"

#define LOG_ARC "archive"

/* Where a shard's bytes come from: a file (PATH) or memory (BUF, LEN; PATH is then only its label). */
typedef struct pf_arc_src {
    const char *path;
    const void *buf;
    size_t len;
} pf_arc_src;

typedef struct pf_arc {
    struct archive *a;
    int fd;             /* -1 for memory */
    int64_t next;       /* index of the entry the next header read returns */
} pf_arc;

/* Open SRC for reading: tar and zip only, gzip/bzip2/xz/zstd through libarchive's linked libraries. A file
 * must be a regular file (a fifo or device would block or never end). */
int pf_arc_open(const pf_arc_src *src, pf_arc *h, pf_err *err);
void pf_arc_close(pf_arc *h);
/* The next entry: 1 (*e, *name: the member's name, or NULL when libarchive cannot give it), 0 end, -1 the
 * shard cannot be read further (err: "SHARD: reason ..." naming the last good member when there is one). */
int pf_arc_next(pf_arc *h, const char *shard, struct archive_entry **e, const char **name, pf_err *err);
/* Why the entry E cannot be an item (NULL: it can): its type, or a stored size over MAX. */
const char *pf_arc_entry_refusal(struct archive_entry *e, size_t max, char *buf, size_t cap);
/* Read the current entry's data, counting bytes: at most MAX (a larger member is refused whatever its header
 * said). *data malloc'd. -1 with REFUSED = 1 when the member is over MAX (the shard stays readable), 0 for a
 * read error (truncated, corrupt: the shard is not). */
int pf_arc_read_data(pf_arc *h, const char *shard, const char *name, int64_t size_hint, size_t max,
                     uint8_t **data, size_t *len, int *refused, pf_err *err);
/* A compressed shard that inflated more than PF_ARCHIVE_MAX_RATIO times its size past the floor. */
int pf_arc_is_bomb(pf_arc *h);
/* Length of the well-formed UTF-8 sequence at S (at most N bytes), 0 when it is not. */
size_t pf_arc_utf8_len(const unsigned char *s, size_t n);
/* NAME with bytes that are not printable UTF-8 shown as \xNN, in BUF (truncated to CAP). */
const char *pf_arc_display(const char *name, char *buf, size_t cap);

/* The reader over a shard held in memory (LABEL names it in messages): the fuzzer and tests. */
int pf_arc_reader_open_memory(const void *buf, size_t len, const char *label, pf_archive_reader **out, pf_err *err);

#endif
