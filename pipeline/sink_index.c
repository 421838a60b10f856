/* sink_index.c - see sink_index.h. One WITHOUT ROWID table of 16-byte identities and a small meta table
 * (checkpoint, record count, the output's inode and a hash of its bytes before the checkpoint), plus the
 * error records by item and the superseded ones (for compaction).
 *
 * Rollback journal, truncated after each commit, with synchronous=OFF: a commit costs no fsync, and the index
 * takes no more room than its rows (a WAL grows by whole pages per commit up to its checkpoint, megabytes that
 * a nearly full disk does not have, and the output must get that room first). A kill -9 is safe (the kernel
 * keeps what was written; the hot journal rolls the open transaction back at the next open); a power cut may
 * corrupt the file, which is then removed and rebuilt from the output (it holds nothing else). A bounded page
 * cache: the sink's memory for the index, whatever its size. */
#include "pipeline/sink_index.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "base/log.h"

#define FP_BYTES 256   /* bytes before the checkpoint whose hash must still match */
#define CACHE_KIB 8192 /* SQLite page cache: the sink's memory for the index, whatever its size */
/* Page size of a new index. Identities are random, so once the index is far larger than its cache every record
 * dirties its own leaf page, and the rollback journal copies that page first: what a record costs in writes
 * follows the page size. `bench/sink_restart.py --records 1000000 --steady 50000`: 4673 bytes written per
 * record with 4 KiB pages, 1998 with 1 KiB, 1979 with 512 B (the kernel dirties 4 KiB anyway); 818 on an
 * empty output (mostly the record's own line). An index made with other pages keeps them. */
#define PAGE_BYTES 1024
#define VERSION 2      /* 2: `content` holds the results' content-key identities (a version 1 index is rebuilt) */

struct pf_sink_index {
    sqlite3 *db;
    sqlite3_stmt *has, *add, *del;
    sqlite3_stmt *ck_has, *ck_add;
    sqlite3_stmt *err_add, *err_has, *sup_add;
    char *path;
    int in_tx;
    int64_t count, tx_delta, end;
    int64_t superseded, tx_superseded;
};

char *pf_sink_index_path(const char *out)
{
    size_t n = strlen(out) + 6;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s.seen", out);
    return p;
}

static int db_err(pf_sink_index *ix, const char *what, pf_err *err)
{
    if (sqlite3_errcode(ix->db) == SQLITE_FULL)   /* say it as the output's own write would */
        return pf_errf(err, "%s (the sink's record index): %s: %s", ix->path, what, strerror(ENOSPC));
    return pf_errf(err, "%s (the sink's record index): %s: %s", ix->path, what, sqlite3_errmsg(ix->db));
}

static int exec(pf_sink_index *ix, const char *sql, pf_err *err)
{
    char *msg = NULL;
    int r = sqlite3_exec(ix->db, sql, NULL, NULL, &msg);
    if (r != SQLITE_OK) {
        pf_errf(err, "%s (the sink's record index): %s", ix->path,
                (r & 0xff) == SQLITE_FULL ? strerror(ENOSPC) : msg ? msg : "error");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* meta value K as an integer (DEF when absent). */
static int meta_get(pf_sink_index *ix, const char *k, int64_t def, int64_t *v, pf_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ix->db, "SELECT v FROM meta WHERE k=?", -1, &st, NULL) != SQLITE_OK)
        return db_err(ix, "read meta", err);
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    int r = sqlite3_step(st);
    *v = r == SQLITE_ROW ? sqlite3_column_int64(st, 0) : def;
    sqlite3_finalize(st);
    return r == SQLITE_ROW || r == SQLITE_DONE ? 0 : db_err(ix, "read meta", err);
}

static int meta_set(pf_sink_index *ix, const char *k, int64_t v, pf_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ix->db, "INSERT OR REPLACE INTO meta(k, v) VALUES(?, ?)", -1, &st, NULL) != SQLITE_OK)
        return db_err(ix, "write meta", err);
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    int r = sqlite3_step(st);
    sqlite3_finalize(st);
    return r == SQLITE_DONE ? 0 : db_err(ix, "write meta", err);
}

/* Hash of the output's bytes [END - FP_BYTES, END) (-1 on a read error: no match). */
static int64_t fingerprint(int fd, int64_t end)
{
    char buf[FP_BYTES];
    int64_t from = end > FP_BYTES ? end - FP_BYTES : 0;
    size_t want = (size_t)(end - from), got = 0;
    while (got < want) {
        ssize_t r = pread(fd, buf + got, want - got, from + (int64_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return (int64_t)(XXH3_64bits(buf, want) & 0x7fffffffffffffffull);
}

static int begin(pf_sink_index *ix, pf_err *err)
{
    if (ix->in_tx)
        return 0;
    if (exec(ix, "BEGIN", err))
        return -1;
    ix->in_tx = 1;
    ix->tx_delta = 0;
    return 0;
}

/* Empty the index (it does not match the output): the caller scans the output from 0. */
static int start_over(pf_sink_index *ix, pf_err *err)
{
    if (begin(ix, err) ||
        exec(ix, "DELETE FROM seen; DELETE FROM meta; DELETE FROM errs; DELETE FROM superseded; DELETE FROM content", err) ||
        exec(ix, "COMMIT", err))
        return -1;
    ix->in_tx = 0;
    ix->count = ix->end = ix->superseded = 0;
    return 0;
}

/* Does the committed index describe the output FD? *WHY: a reason when not. */
static int matches(pf_sink_index *ix, int fd, const char **why, pf_err *err)
{
    int64_t ver, end, ino, fp, count, sup;
    if (meta_get(ix, "superseded", 0, &sup, err) || meta_get(ix, "version", 0, &ver, err) ||
        meta_get(ix, "end", -1, &end, err) ||
        meta_get(ix, "ino", -1, &ino, err) || meta_get(ix, "fp", -1, &fp, err) ||
        meta_get(ix, "records", 0, &count, err))
        return -1;
    struct stat st;
    if (fstat(fd, &st) != 0)
        return pf_errf(err, "%s: %s", ix->path, strerror(errno));
    *why = NULL;
    if (ver == 1)
        *why = "made by an older paliflow (without content keys)";
    else if (ver != VERSION || end < 0)
        *why = "new or incomplete index";
    else if ((int64_t)st.st_ino != ino)
        *why = "the output is another file than the one indexed";
    else if (st.st_size < end)
        *why = "the output is shorter than what was indexed (cut or replaced)";
    else if (fingerprint(fd, end) != fp)
        *why = "the output's indexed bytes changed (edited)";
    if (*why)
        return 0;
    ix->end = end;
    ix->count = count;
    ix->superseded = sup;
    return 1;
}

static int prepare(pf_sink_index *ix, pf_err *err)
{
    if (sqlite3_prepare_v2(ix->db, "SELECT 1 FROM seen WHERE id=?", -1, &ix->has, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "INSERT OR IGNORE INTO seen(id) VALUES(?)", -1, &ix->add, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "DELETE FROM seen WHERE id=?", -1, &ix->del, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "INSERT OR IGNORE INTO errs(id) VALUES(?)", -1, &ix->err_add, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "SELECT 1 FROM errs WHERE id=?", -1, &ix->err_has, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "INSERT OR IGNORE INTO superseded(id) VALUES(?)", -1, &ix->sup_add, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "SELECT 1 FROM content WHERE id=?", -1, &ix->ck_has, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "INSERT OR IGNORE INTO content(id) VALUES(?)", -1, &ix->ck_add, NULL) != SQLITE_OK)
        return db_err(ix, "prepare", err);
    return 0;
}

static int open_once(const char *out, int fd, pf_sink_index **ixp, int64_t *from, int *corrupt, pf_err *err);

/* The index file and its journal, removed (corrupt: it is rebuilt from the output). */
static void remove_files(const char *path)
{
    size_t n = strlen(path) + 16;
    char *j = malloc(n);
    unlink(path);
    if (j) {
        snprintf(j, n, "%s-journal", path);
        unlink(j);
        snprintf(j, n, "%s-wal", path);
        unlink(j);
        snprintf(j, n, "%s-shm", path);
        unlink(j);
    }
    free(j);
}

int pf_sink_index_open(const char *out, int fd, pf_sink_index **ixp, int64_t *from, pf_err *err)
{
    int corrupt = 0;
    if (open_once(out, fd, ixp, from, &corrupt, err) == 0)
        return 0;
    if (!corrupt)
        return -1;
    char *p = pf_sink_index_path(out);
    if (!p)
        return -1;
    pf_warn("sink", "%s: %s: removed; it is rebuilt from the output", p, err->msg);
    remove_files(p);
    free(p);
    return open_once(out, fd, ixp, from, &corrupt, err);
}

static int open_once(const char *out, int fd, pf_sink_index **ixp, int64_t *from, int *corrupt, pf_err *err)
{
    *ixp = NULL;
    *from = 0;
    pf_sink_index *ix = calloc(1, sizeof *ix);
    if (!ix || !(ix->path = pf_sink_index_path(out))) {
        free(ix);
        return pf_errf(err, "%s: out of memory", out);
    }
    if (sqlite3_open_v2(ix->path, &ix->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        db_err(ix, "open", err);
        pf_sink_index_close(ix);
        return -1;
    }
    char pragmas[200];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA page_size=%d; PRAGMA journal_mode=TRUNCATE; PRAGMA synchronous=OFF; PRAGMA cache_size=-%d;",
             PAGE_BYTES, CACHE_KIB);
    const char *why = NULL;
    int m = -1;
    if (exec(ix, pragmas, err) ||
        exec(ix, "CREATE TABLE IF NOT EXISTS seen(id BLOB PRIMARY KEY) WITHOUT ROWID;"
                 "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER);"
                 /* error records (by pf_rec_supersede_ident), and those a later result superseded */
                 "CREATE TABLE IF NOT EXISTS errs(id BLOB PRIMARY KEY) WITHOUT ROWID;"
                 "CREATE TABLE IF NOT EXISTS superseded(id BLOB PRIMARY KEY) WITHOUT ROWID;"
                 /* --path-only results by their content key (not counted as records: sink_index.h) */
                 "CREATE TABLE IF NOT EXISTS content(id BLOB PRIMARY KEY) WITHOUT ROWID", err) ||
        prepare(ix, err) || (m = matches(ix, fd, &why, err)) < 0) {
        int code = sqlite3_errcode(ix->db) & 0xff;
        *corrupt = code == SQLITE_CORRUPT || code == SQLITE_NOTADB;
        pf_sink_index_close(ix);
        return -1;
    }
    if (!m) {
        int64_t had = 0;
        meta_get(ix, "records", 0, &had, err);
        if (had || strcmp(why, "new or incomplete index"))
            pf_warn("sink", "%s: %s: rebuilding it from the whole output", ix->path, why);
        if (start_over(ix, err)) {
            pf_sink_index_close(ix);
            return -1;
        }
    }
    *from = ix->end;
    *ixp = ix;
    return 0;
}

void pf_sink_index_close(pf_sink_index *ix)
{
    if (!ix)
        return;
    if (ix->in_tx)
        sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_finalize(ix->has);
    sqlite3_finalize(ix->add);
    sqlite3_finalize(ix->del);
    sqlite3_finalize(ix->err_add);
    sqlite3_finalize(ix->err_has);
    sqlite3_finalize(ix->sup_add);
    sqlite3_finalize(ix->ck_has);
    sqlite3_finalize(ix->ck_add);
    sqlite3_close(ix->db);
    free(ix->path);
    free(ix);
}

pf_rec_id pf_rec_identity(const char *key, const char *path, int ok)
{
    XXH3_state_t *st = XXH3_createState();
    pf_rec_id id = {0, 0};
    if (!st)
        return id;
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, key, strlen(key) + 1);   /* with the NUL as a separator */
    XXH3_128bits_update(st, path, strlen(path));
    if (!ok)
        XXH3_128bits_update(st, "\0E", 2);   /* results keep the identity they always had */
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    id.hi = h.high64;
    id.lo = h.low64;
    return id;
}

static void bind_id(sqlite3_stmt *st, pf_rec_id id)
{
    unsigned char b[16];
    for (int i = 0; i < 8; i++) {
        b[i] = (unsigned char)(id.hi >> (56 - 8 * i));
        b[8 + i] = (unsigned char)(id.lo >> (56 - 8 * i));
    }
    sqlite3_bind_blob(st, 1, b, 16, SQLITE_TRANSIENT);
}

static int lookup(pf_sink_index *ix, sqlite3_stmt *st, pf_rec_id id, pf_err *err)
{
    sqlite3_reset(st);
    bind_id(st, id);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    if (r == SQLITE_ROW)
        return 1;
    return r == SQLITE_DONE ? 0 : db_err(ix, "lookup", err);
}

int pf_sink_index_has(pf_sink_index *ix, pf_rec_id id, pf_err *err) { return lookup(ix, ix->has, id, err); }

int pf_sink_index_has_content(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    return lookup(ix, ix->ck_has, id, err);
}

/* Run ST (add or del) on ID: 1 a row changed, 0 none, -1 error. */
static int change(pf_sink_index *ix, sqlite3_stmt *st, pf_rec_id id, pf_err *err)
{
    if (begin(ix, err))
        return -1;
    sqlite3_reset(st);
    bind_id(st, id);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    if (r != SQLITE_DONE)
        return db_err(ix, "update", err);
    return sqlite3_changes(ix->db) > 0;
}

int pf_sink_index_add(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    int r = change(ix, ix->add, id, err);
    if (r > 0)
        ix->tx_delta++;
    return r;
}

int pf_sink_index_add_content(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    return change(ix, ix->ck_add, id, err);
}

static int cmp_id(const void *a, const void *b)
{
    const pf_rec_id *x = a, *y = b;
    if (x->hi != y->hi)
        return x->hi < y->hi ? -1 : 1;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

int pf_sink_index_add_sorted(pf_sink_index *ix, pf_rec_id *ids, size_t n,
                             int (*add)(pf_sink_index *, pf_rec_id, pf_err *), pf_err *err)
{
    qsort(ids, n, sizeof *ids, cmp_id);   /* bind_id stores big-endian: this is the B-tree's order */
    for (size_t i = 0; i < n; i++)
        if (add(ix, ids[i], err) < 0)
            return -1;
    return 0;
}

int pf_sink_index_remove(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    int r = change(ix, ix->del, id, err);
    if (r > 0)
        ix->tx_delta--;
    return r;
}

int pf_sink_index_commit(pf_sink_index *ix, int fd, int64_t end, pf_err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return pf_errf(err, "%s: %s", ix->path, strerror(errno));
    int64_t fp = fingerprint(fd, end);
    if (begin(ix, err) || meta_set(ix, "version", VERSION, err) || meta_set(ix, "end", end, err) ||
        meta_set(ix, "ino", (int64_t)st.st_ino, err) || meta_set(ix, "fp", fp, err) ||
        meta_set(ix, "records", ix->count + ix->tx_delta, err) ||
        meta_set(ix, "superseded", ix->superseded + ix->tx_superseded, err) || exec(ix, "COMMIT", err)) {
        pf_sink_index_rollback(ix);
        return -1;
    }
    ix->in_tx = 0;
    ix->count += ix->tx_delta;
    ix->superseded += ix->tx_superseded;
    ix->tx_delta = ix->tx_superseded = 0;
    ix->end = end;
    return 0;
}

void pf_sink_index_rollback(pf_sink_index *ix)
{
    if (ix->in_tx)
        sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
    ix->in_tx = 0;
    ix->tx_delta = ix->tx_superseded = 0;
}

pf_rec_id pf_rec_supersede_ident(const char *key, const char *path)
{
    const char *dash = strrchr(key, '-');
    key = dash ? dash + 1 : key;
    XXH3_state_t *st = XXH3_createState();
    pf_rec_id id = {0, 0};
    if (!st)
        return id;
    XXH3_128bits_reset(st);
    XXH3_128bits_update(st, key, strlen(key) + 1);
    XXH3_128bits_update(st, path, strlen(path));
    XXH128_hash_t h = XXH3_128bits_digest(st);
    XXH3_freeState(st);
    id.hi = h.high64;
    id.lo = h.low64;
    return id;
}

int pf_sink_index_note_error(pf_sink_index *ix, pf_rec_id ident, pf_err *err)
{
    return change(ix, ix->err_add, ident, err) < 0 ? -1 : 0;
}

int pf_sink_index_note_result(pf_sink_index *ix, pf_rec_id ident, pf_err *err)
{
    sqlite3_reset(ix->err_has);
    bind_id(ix->err_has, ident);
    int r = sqlite3_step(ix->err_has);
    sqlite3_reset(ix->err_has);
    if (r == SQLITE_DONE)
        return 0;
    if (r != SQLITE_ROW)
        return db_err(ix, "lookup", err);
    int a = change(ix, ix->sup_add, ident, err);
    if (a > 0)
        ix->tx_superseded++;
    return a < 0 ? -1 : 1;
}

int64_t pf_sink_index_superseded(const pf_sink_index *ix) { return ix->superseded + ix->tx_superseded; }

int pf_sink_index_each_superseded(pf_sink_index *ix, int (*cb)(pf_rec_id ident, void *arg), void *arg, pf_err *err)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(ix->db, "SELECT id FROM superseded", -1, &st, NULL) != SQLITE_OK)
        return db_err(ix, "read", err);
    int r, rc = 0;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *b = sqlite3_column_blob(st, 0);
        if (!b || sqlite3_column_bytes(st, 0) != 16)
            continue;
        pf_rec_id id = {0, 0};
        for (int i = 0; i < 8; i++) {
            id.hi = id.hi << 8 | b[i];
            id.lo = id.lo << 8 | b[8 + i];
        }
        rc = cb(id, arg);
    }
    if (!rc && r != SQLITE_DONE)
        rc = db_err(ix, "read", err);
    sqlite3_finalize(st);
    return rc;
}

int pf_sink_index_compacted(pf_sink_index *ix, const pf_rec_id *ids, size_t n, int fd, int64_t end, pf_err *err)
{
    for (size_t i = 0; i < n; i++)
        if (pf_sink_index_remove(ix, ids[i], err) < 0)
            return -1;
    /* every superseded error is gone from the output now; their items have their results */
    if (begin(ix, err) || exec(ix, "DELETE FROM errs WHERE id IN (SELECT id FROM superseded); DELETE FROM superseded",
                               err))
        return -1;
    ix->tx_superseded = -ix->superseded;
    return pf_sink_index_commit(ix, fd, end, err);
}

int64_t pf_sink_index_count(const pf_sink_index *ix) { return ix->count + ix->tx_delta; }

int64_t pf_sink_index_end(const pf_sink_index *ix) { return ix->end; }
