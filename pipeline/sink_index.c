/* sink_index.c - see sink_index.h. Two sets of 16-byte identities kept as sorted runs (sink_idset.h: the
 * records, and the content keys of --path-only results) and a small meta table (checkpoint, record count, the
 * output's inode and a hash of its bytes before the checkpoint), plus the error records by item and the
 * superseded ones (for compaction: plain tables, one row per error record).
 *
 * Rollback journal, truncated after each commit, with synchronous=OFF: a commit costs no fsync, and the journal
 * holds only the few pages a commit changes in place (new runs go to new or free pages, which need no copy),
 * where a WAL grows by whole pages per commit up to its checkpoint, megabytes that a nearly full disk does not
 * have (the output must get that room first). The file itself holds the live runs plus the pages that ended
 * merges freed (reused by the next runs): up to about twice the identities' own size. A kill -9 is safe (the kernel
 * keeps what was written; the hot journal rolls the open transaction back at the next open); a power cut may
 * corrupt the file, which is then removed and rebuilt from the output (it holds nothing else). A bounded page
 * cache and the open batch (the identities added since the last commit, about a second's): the sink's memory
 * for the index, whatever its size. secure_delete is off (Debian's SQLite turns it on):
 * the pages of a merged run hold only hashes, and zeroing them would write each one twice more (page and its
 * journal copy) when a merge drops it. */
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
#include "pipeline/sink_idset.h"

#define FP_BYTES 256   /* bytes before the checkpoint whose hash must still match */
#define CACHE_KIB 8192 /* SQLite page cache: the sink's memory for the index, whatever its size */
/* Page size of a new index. The identity sets are written in order (sorted runs, sink_idset.h), never a random
 * page per record, so pages as large as the kernel's: fewer B-tree levels to walk per lookup in a run far
 * larger than the cache (one leaf read), and a run's pages dense. (Version 2 kept one B-tree of random
 * identities and took 1 KiB pages, since each record dirtied one.) An index made with other pages keeps them;
 * the rebuild of an older version makes a new file. */
#define PAGE_BYTES 4096
/* 2: `content` holds the results' content-key identities (a version 1 index is rebuilt); 3: identities in
 * sorted runs (a version 2 index is rebuilt). */
#define VERSION 3
enum { SET_RECORDS, SET_CONTENT };   /* the identity sets' kinds in the runs registry */

struct pf_sink_index {
    sqlite3 *db;
    pf_idset *seen, *content;
    sqlite3_stmt *err_add, *err_has, *sup_add;
    char *path;
    int in_tx;
    int broken;   /* a rollback left the sets' registry unread: every later call fails */
    int bulk;     /* the index starts over: what comes before the first commit is the output read back */
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
    return pf_idset_db_err(ix->db, ix->path, what, err);
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
    else if (ver == 2)
        *why = "made by an older paliflow (one B-tree of identities, not sorted runs)";
    else if (ver != VERSION || end < 0)
        *why = "new or incomplete index";
    else if ((int64_t)st.st_ino != ino)
        *why = "the output is another file than the one indexed";
    else if (st.st_size < end)
        *why = "the output is shorter than what was indexed (cut or replaced)";
    else if (fingerprint(fd, end) != fp)
        *why = "the output's indexed bytes changed (edited)";
    else if (pf_idset_consistent(ix->db, ix->path, why, err) < 0)
        return -1;
    if (*why)
        return 0;
    ix->end = end;
    ix->count = count;
    ix->superseded = sup;
    return 1;
}

static int prepare(pf_sink_index *ix, pf_err *err)
{
    if (sqlite3_prepare_v2(ix->db, "INSERT OR IGNORE INTO errs(id) VALUES(?)", -1, &ix->err_add, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "SELECT 1 FROM errs WHERE id=?", -1, &ix->err_has, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(ix->db, "INSERT OR IGNORE INTO superseded(id) VALUES(?)", -1, &ix->sup_add, NULL) !=
            SQLITE_OK)
        return db_err(ix, "prepare", err);
    return pf_idset_open(ix->db, ix->path, SET_RECORDS, &ix->seen, err) ||
           pf_idset_open(ix->db, ix->path, SET_CONTENT, &ix->content, err);
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

/* Open (create) the file and its tables. */
static int open_db(pf_sink_index *ix, pf_err *err)
{
    if (sqlite3_open_v2(ix->path, &ix->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK)
        return db_err(ix, "open", err);
    char pragmas[240];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA page_size=%d; PRAGMA journal_mode=TRUNCATE; PRAGMA synchronous=OFF; PRAGMA cache_size=-%d;"
             "PRAGMA secure_delete=OFF;",
             PAGE_BYTES, CACHE_KIB);
    if (exec(ix, pragmas, err) ||
        exec(ix, "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER);"
                 /* error records (by pf_rec_supersede_ident), and those a later result superseded */
                 "CREATE TABLE IF NOT EXISTS errs(id BLOB PRIMARY KEY) WITHOUT ROWID;"
                 "CREATE TABLE IF NOT EXISTS superseded(id BLOB PRIMARY KEY) WITHOUT ROWID", err))
        return -1;
    /* the record identities and the --path-only content keys (not counted as records: sink_index.h) */
    return pf_idset_schema(ix->db, ix->path, err);
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
    const char *why = NULL;
    int m = -1;
    if (open_db(ix, err) == 0)
        m = matches(ix, fd, &why, err);
    if (m == 0) {
        /* Start over in a new file: quicker than emptying a large one, and it takes this version's page size */
        int64_t had = 0;
        meta_get(ix, "records", 0, &had, err);
        if (had || strcmp(why, "new or incomplete index"))
            pf_warn("sink", "%s: %s: rebuilding it from the whole output", ix->path, why);
        sqlite3_close(ix->db);
        ix->db = NULL;
        remove_files(ix->path);
        m = open_db(ix, err) ? -1 : 1;
        ix->end = ix->count = ix->superseded = 0;
    }
    if (m < 0 || prepare(ix, err)) {
        int code = ix->db ? sqlite3_errcode(ix->db) & 0xff : SQLITE_OK;
        *corrupt = code == SQLITE_CORRUPT || code == SQLITE_NOTADB;
        pf_sink_index_close(ix);
        return -1;
    }
    *from = ix->end;
    if (*from == 0) {   /* the whole output is read back before the first commit: a bulk load (sink_idset.h) */
        ix->bulk = 1;
        pf_idset_set_bulk(ix->seen, 1);
        pf_idset_set_bulk(ix->content, 1);
    }
    *ixp = ix;
    return 0;
}

void pf_sink_index_close(pf_sink_index *ix)
{
    if (!ix)
        return;
    if (ix->in_tx)
        sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
    pf_idset_close(ix->seen);
    pf_idset_close(ix->content);
    sqlite3_finalize(ix->err_add);
    sqlite3_finalize(ix->err_has);
    sqlite3_finalize(ix->sup_add);
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
    pf_rec_id_bytes(id, b);
    sqlite3_bind_blob(st, 1, b, 16, SQLITE_TRANSIENT);
}

static int usable(pf_sink_index *ix, pf_err *err)
{
    return ix->broken ? pf_errf(err, "%s (the sink's record index): unusable after a failed rollback", ix->path)
                      : 0;
}

int pf_sink_index_has(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    return usable(ix, err) ? -1 : pf_idset_has(ix->seen, id, err);
}

int pf_sink_index_has_content(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    return usable(ix, err) ? -1 : pf_idset_has(ix->content, id, err);
}

/* Run ST (an insert into errs or superseded) on ID: 1 a row changed, 0 none, -1 error. */
static int change(pf_sink_index *ix, sqlite3_stmt *st, pf_rec_id id, pf_err *err)
{
    if (usable(ix, err) || begin(ix, err))
        return -1;
    sqlite3_reset(st);
    bind_id(st, id);
    int r = sqlite3_step(st);
    sqlite3_reset(st);
    if (r != SQLITE_DONE)
        return db_err(ix, "update", err);
    return sqlite3_changes(ix->db) > 0;
}

/* A set's change inside the open batch: FN (pf_idset_add or _remove) on ID. */
static int set_change(pf_sink_index *ix, pf_idset *set, int (*fn)(pf_idset *, pf_rec_id, pf_err *), pf_rec_id id,
                      pf_err *err)
{
    if (usable(ix, err) || begin(ix, err))
        return -1;
    return fn(set, id, err);
}

int pf_sink_index_add(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    int r = set_change(ix, ix->seen, pf_idset_add, id, err);
    if (r > 0)
        ix->tx_delta++;
    return r;
}

int pf_sink_index_add_content(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    return set_change(ix, ix->content, pf_idset_add, id, err);
}

int pf_sink_index_add_sorted(pf_sink_index *ix, pf_rec_id *ids, size_t n,
                             int (*add)(pf_sink_index *, pf_rec_id, pf_err *), pf_err *err)
{
    /* Order no longer matters (the open batch is a hash set, sorted when it is written as a run); the
     * interface keeps its name for its callers. */
    for (size_t i = 0; i < n; i++)
        if (add(ix, ids[i], err) < 0)
            return -1;
    return 0;
}

int pf_sink_index_remove(pf_sink_index *ix, pf_rec_id id, pf_err *err)
{
    int r = set_change(ix, ix->seen, pf_idset_remove, id, err);
    if (r > 0)
        ix->tx_delta--;
    return r;
}

/* After a bulk load's flush (one run of distinct identities): the record count is that run's size, not the
 * adds counted, which took an identity found in two places of the output twice. */
static int bulk_count(pf_sink_index *ix)
{
    if (ix->bulk) {
        pf_idset_stats st;
        pf_idset_get_stats(ix->seen, &st);
        ix->tx_delta = st.in_runs - ix->count;
    }
    return 0;
}

int pf_sink_index_commit(pf_sink_index *ix, int fd, int64_t end, pf_err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return pf_errf(err, "%s: %s", ix->path, strerror(errno));
    int64_t fp = fingerprint(fd, end);
    /* the open batch's identities become runs, and merges take their step, in the batch's transaction */
    if (usable(ix, err) || begin(ix, err) || pf_idset_flush(ix->seen, err) || pf_idset_flush(ix->content, err) ||
        bulk_count(ix) || meta_set(ix, "version", VERSION, err) || meta_set(ix, "end", end, err) ||
        meta_set(ix, "ino", (int64_t)st.st_ino, err) || meta_set(ix, "fp", fp, err) ||
        meta_set(ix, "records", ix->count + ix->tx_delta, err) ||
        meta_set(ix, "superseded", ix->superseded + ix->tx_superseded, err) || exec(ix, "COMMIT", err)) {
        pf_sink_index_rollback(ix);
        return -1;
    }
    ix->in_tx = 0;
    if (ix->bulk) {
        ix->bulk = 0;
        pf_idset_set_bulk(ix->seen, 0);
        pf_idset_set_bulk(ix->content, 0);
    }
    ix->count += ix->tx_delta;
    ix->superseded += ix->tx_superseded;
    ix->tx_delta = ix->tx_superseded = 0;
    ix->end = end;
    return 0;
}

void pf_sink_index_rollback(pf_sink_index *ix)
{
    if (ix->in_tx) {
        sqlite3_exec(ix->db, "ROLLBACK", NULL, NULL, NULL);
        /* the runs this transaction wrote or merged are gone with it: read the registry again */
        pf_err e = {{0}};
        if (pf_idset_forget(ix->seen, &e) || pf_idset_forget(ix->content, &e)) {
            pf_warn("sink", "%s", e.msg);
            ix->broken = 1;
        }
    }
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
        rc = cb(pf_rec_id_from_bytes(b), arg);
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
