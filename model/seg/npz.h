/* npz.h - a NumPy .npz archive (a zip of .npy members, as np.savez / np.savez_compressed write it) read
 * completely into memory through libarchive (stored and deflated members alike; CRCs checked by libarchive).
 *
 * The archive is untrusted: member sizes are checked against a caller's cap before any allocation, a
 * member must inflate to exactly its declared size, names must be unique, encrypted members and non-.npy
 * members are refused or skipped, and every member is parsed as .npy (npy.h) before the archive is handed
 * back. Messages name the file and the member.
 */
#ifndef PF_MODEL_SEG_NPZ_H
#define PF_MODEL_SEG_NPZ_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/seg/npy.h"

typedef struct pf_npz_member {
    char *name;                 /* without the ".npy" suffix, as np.load's keys */
    uint8_t *bytes;             /* the member's uncompressed .npy bytes (owned) */
    size_t len;
    pf_npy arr;                 /* parsed; arr.data points into bytes */
} pf_npz_member;

typedef struct pf_npz {
    pf_npz_member *m;
    size_t n;
} pf_npz;

/* Limits on an archive. pf_npz_default_limits(): 4096 members, 1 GiB per member, 4 GiB in all. */
typedef struct pf_npz_limits {
    size_t max_members;
    uint64_t max_member_bytes;
    uint64_t max_total_bytes;
} pf_npz_limits;
pf_npz_limits pf_npz_default_limits(void);

/* Parse the archive BUF[0..LEN); LABEL (the file name) goes in messages. LIM NULL = defaults. */
int pf_npz_read_memory(const void *buf, size_t len, const char *label, const pf_npz_limits *lim, pf_npz *out,
                       pf_err *err);
/* Read the file PATH (at most lim->max_total_bytes) and parse it. */
int pf_npz_read_file(const char *path, const pf_npz_limits *lim, pf_npz *out, pf_err *err);
void pf_npz_free(pf_npz *z);

/* The array called NAME, or NULL. */
const pf_npy *pf_npz_get(const pf_npz *z, const char *name);

#endif
