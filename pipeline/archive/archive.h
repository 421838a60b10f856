/* archive.h - images inside tar and zip shards (issue 19), read with libarchive, streamed: a shard is never
 * unpacked to disk and never held whole in memory; one member's bytes at most, bounded by the caller's limit.
 *
 * Shards: tar (plain, or compressed with gzip, bzip2, xz or zstd by libarchive's own libraries: no external
 * programs) and zip, named by extension (pf_archive_is_shard_name). Which of the two a file is comes from its
 * content (libarchive's detection); nothing else (no cpio, 7z, raw streams) is accepted.
 *
 * Members: a member is named "SHARD#MEMBER" (pf_archive_split_ref) where SHARD is the shard's path and MEMBER
 * the member's name inside it, exactly as stored (no leading "./" dropped). Members are grouped the way
 * WebDataset groups them (pf_archive_wds_key): key = the name up to the first dot of its last path component
 * ("a/000001.seg.png" -> key "a/000001", extension "seg.png"); consecutive members with one key are a sample.
 * Every member whose last extension is an image type is an item; members of its sample whose last extension is
 * json or txt are carried with it (pf_archive_member.extra); other members are skipped (counted).
 *
 * Hostile shards: a member is refused (pf_archive_member.refused says why; the caller makes its error record)
 * for a name that climbs out (absolute, a ".." component, a backslash or drive path), holds control bytes or
 * is not UTF-8; for a type other than a regular file (symlink, hardlink, device, fifo); for a stored size over
 * the caller's byte limit; for a name already seen in the shard (duplicate: the first one wins). Reads count
 * the bytes as they come and stop at the limit, whatever the header said. A shard that cannot be opened, is
 * truncated or corrupt, holds more than max_entries members, inflates more than PF_ARCHIVE_MAX_RATIO times
 * its compressed size past PF_ARCHIVE_RATIO_FLOOR bytes, or declares a member over PF_ARCHIVE_MAX_SKIP bytes
 * in a compressed shard (compression bombs: the listing would inflate them to skip them) ends its listing
 * with a reason (pf_archive_list_next returns -1); the members listed before stay good.
 *
 * Every function that can fail returns 0 / -1 (or the documented counts) and fills ERR with the shard, the
 * member and the reason. */
#ifndef PF_PIPELINE_ARCHIVE_H
#define PF_PIPELINE_ARCHIVE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define PF_ARCHIVE_MAX_ENTRIES (1u << 20)      /* members per shard listed at most (default) */
#define PF_ARCHIVE_MAX_SIBLING (1u << 20)      /* bytes of one .json/.txt member carried into a record */
#define PF_ARCHIVE_MAX_GROUP_IMAGES 64         /* image members of one WebDataset key */
#define PF_ARCHIVE_MAX_NAME 4096               /* bytes of a member name */
#define PF_ARCHIVE_MAX_RATIO 1000              /* uncompressed / compressed bytes of a compressed shard... */
#define PF_ARCHIVE_RATIO_FLOOR (1ull << 30)    /* ...checked once this many uncompressed bytes went by */
#define PF_ARCHIVE_MAX_ZIP_DIRECTORY (128ull << 20)   /* bytes of a zip's central directory */
#define PF_ARCHIVE_MAX_SKIP (1ull << 34)       /* a member of a compressed shard larger than this ends its listing */

typedef struct pf_archive_limits {
    size_t max_member_bytes;   /* an image member larger than this is refused (the producer's --max-file-mb) */
    size_t max_entries;        /* 0: PF_ARCHIVE_MAX_ENTRIES */
    size_t max_sibling_bytes;  /* 0: PF_ARCHIVE_MAX_SIBLING */
} pf_archive_limits;

/* --- names --- */

/* 1 when PATH's name ends in .tar, .tar.gz, .tgz, .tar.bz2, .tbz2, .tar.xz, .txz, .tar.zst, .tzst or .zip
 * (any case). */
int pf_archive_is_shard_name(const char *path);
/* REF = "SHARD#MEMBER" with SHARD a shard name (above) and MEMBER not empty: 1 and *shard_len = strlen(SHARD)
 * (the member starts at REF + *shard_len + 1). The first '#' after which the text before is a shard name
 * splits: "a#b.tar#c#d.jpg" -> "a#b.tar" + "c#d.jpg". 0 when REF is no member reference. */
int pf_archive_split_ref(const char *ref, size_t *shard_len);
/* 0 when NAME is safe to carry and show; else -1 and the reason in WHY (without the name). */
int pf_archive_check_name(const char *name, char *why, size_t why_cap);
/* S as valid UTF-8 for JSON and messages: bytes that are not well-formed UTF-8, and control bytes, as \xNN.
 * malloc'd (NULL: out of memory). */
char *pf_archive_printable(const char *s);
/* WebDataset's split of NAME: *key_len bytes of key, the extension after it (NULL when the last component
 * has no dot after its first character: WebDataset skips such members). */
const char *pf_archive_wds_key(const char *name, size_t *key_len);
/* 1 when NAME's last extension is an image type the workers decode (jpg jpeg png webp gif bmp tif tiff ppm
 * pgm pbm pnm heic heif avif jxl), any case. */
int pf_archive_is_image_name(const char *name);

/* --- listing a shard (the scan) --- */

typedef struct pf_archive_member {
    const char *name;      /* as stored (not UTF-8 bytes shown as \xNN) */
    const char *key;       /* its WebDataset key */
    int64_t entry;         /* 0-based position among the shard's members */
    int64_t size;          /* stored size, -1 unknown */
    const char *refused;   /* NULL, or why this member is refused */
    int duplicate;         /* refused as a second member of its name: NAME alone does not identify it */
    const char *extra;     /* NULL, or a compact JSON object of its sample's siblings: {"json": <the .json
                              member parsed>, "txt": "<the .txt member>"}, keyed by the extension after the
                              key ("json", "txt", "cls.txt", ...) */
} pf_archive_member;

typedef struct pf_archive_list pf_archive_list;

int pf_archive_list_open(const char *shard, const pf_archive_limits *lim, pf_archive_list **out, pf_err *err);
/* 1: *m is the next image member (pointers valid until the next call); 0: the shard's end; -1: the shard
 * cannot be read further (err: "SHARD: reason", e.g. truncated after member N); the members returned before
 * stand. Members with a sibling problem (over the size limit, bad UTF-8) still come, the problem logged. */
int pf_archive_list_next(pf_archive_list *l, pf_archive_member *m, pf_err *err);
/* Members seen so far: image items returned, siblings carried, others skipped. */
void pf_archive_list_counts(const pf_archive_list *l, size_t *images, size_t *siblings, size_t *skipped);
void pf_archive_list_close(pf_archive_list *l);

/* --- reading members (the producer's dispatch; a sink that writes original bytes) ---
 *
 * A reader is a forward cursor over one shard: reading members in the shard's order reads the shard once;
 * a member behind the cursor reopens the shard (a plain tar then seeks past members, a compressed one must
 * inflate again), except the member read last, which is kept (a copy is handed out: the next task of the same
 * image). One reader holds one libarchive handle and one member's bytes (twice while copying) at most. */

typedef struct pf_archive_reader pf_archive_reader;

int pf_archive_reader_open(const char *shard, pf_archive_reader **out, pf_err *err);
/* The shard the reader is on (as given to open). */
const char *pf_archive_reader_shard(const pf_archive_reader *r);
/* Read member NAME: *data (malloc'd, at most MAX bytes, free()) and *len. ENTRY >= 0 is where the listing
 * found it (checked: a shard changed since is an error); ENTRY < 0 finds the first member so named. Refuses
 * (-1, err "SHARD#NAME: reason") what the listing refuses, a member larger than MAX (stored size or bytes
 * counted), a missing member and a truncated or corrupt shard. The reader stays usable after a refusal of
 * the member itself; after a shard error the next read reopens. */
int pf_archive_read_member(pf_archive_reader *r, const char *name, int64_t entry, size_t max, uint8_t **data,
                           size_t *len, pf_err *err);
void pf_archive_reader_close(pf_archive_reader *r);

/* One member in one call (open, read, close): for occasional reads. */
int pf_archive_read_one(const char *shard, const char *name, size_t max, uint8_t **data, size_t *len, pf_err *err);

/* --- in memory (the fuzzer, tests) --- */
/* List a shard held in BUF: every image member is reported to CB (its refusal included), then reads back
 * each unrefused one with the reader's checks. Returns the number of members listed, or -1 when the
 * listing ended with an error (ERR). */
long pf_archive_walk_memory(const void *buf, size_t len, const pf_archive_limits *lim,
                            void (*cb)(const pf_archive_member *m, const uint8_t *data, size_t n, void *arg),
                            void *arg, pf_err *err);

#endif
