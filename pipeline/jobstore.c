#include "pipeline/jobstore.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pipeline/outfile.h"

/* The item states (pf_item_state, jobstore.h) as they are spelled inside the SQL below. The statements are
 * compile-time strings, so each state is an integer macro turned into text; the asserts keep the two in step. */
#define SQL_TEXT_(x) #x
#define SQL_TEXT(x) SQL_TEXT_(x)
#define ITEM_QUEUED 0
#define ITEM_LEASED 1
#define ITEM_DONE 2
#define ITEM_FAILED 3
_Static_assert(ITEM_QUEUED == PF_ITEM_QUEUED && ITEM_LEASED == PF_ITEM_LEASED && ITEM_DONE == PF_ITEM_DONE &&
                   ITEM_FAILED == PF_ITEM_FAILED,
               "jobstore.c's SQL state numbers differ from pf_item_state");
#define QUEUED SQL_TEXT(ITEM_QUEUED)
#define LEASED SQL_TEXT(ITEM_LEASED)
#define DONE SQL_TEXT(ITEM_DONE)
#define FAILED SQL_TEXT(ITEM_FAILED)
/* "not final": an item a transition may still move (done and failed are final, jobstore.h) */
#define OPEN_STATES "(" SQL_TEXT(ITEM_QUEUED) ", " SQL_TEXT(ITEM_LEASED) ")"
/* "finished": an item that has (or had) a record in the output */
#define FINAL_STATES "(" SQL_TEXT(ITEM_DONE) ", " SQL_TEXT(ITEM_FAILED) ")"
#define BUSY_MS 5000   /* how long the main connection waits for a lock held by another (a second producer is refused earlier) */

/* Every statement the hot paths run is prepared once at open (sqlite3_prepare costs more than most of these
 * statements' steps); the rare ones (migrations, reports) are prepared where they run. */
enum {
    ST_META_GET, ST_META_SET, ST_HAS, ST_ADD, ST_NEXT, ST_GET, ST_LEASE, ST_REQUEUE, ST_FINISH, ST_COUNTS,
    ST_BEYOND, ST_KEPT, ST_KEEP, ST_OPEN, ST_STATE, ST_COUNT
};

/* Counts kept, not counted: count(*) over 3M done items took 0.18 s and over those with an output offset
 * 0.72 s (linear: ~6 s and ~24 s at 100M items), paid at every producer start and at the end of every job.
 * item_counts holds them; the functions below that add items or move one into or out of a final state keep
 * their changes in cnt_delta (an update per item costs nothing more) and pf_jobstore_commit writes them in
 * the same transaction as the changes, so the kept counts always match the committed rows. SQL triggers would
 * keep them too, for any writer, but cost 5 us per finished item here (the producer spends ~130 us per item in
 * all): the job store is written by paliflow only. A store without the table (made before) is counted once. */
enum { CNT_ALL, CNT_DONE, CNT_FAILED, CNT_DONE_PLACED, CNT_FAILED_PLACED, CNT_N };

static const char *const g_sql[ST_COUNT] = {
    [ST_META_GET] = "SELECT v FROM job WHERE k = ?1",
    [ST_META_SET] = "INSERT INTO job(k, v) VALUES(?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
    [ST_HAS] = "SELECT 1 FROM items WHERE path = ?1",
    /* OR IGNORE: the unique index items_ident makes a pair seen again (a rescan, a resumed job) a no-op; the
     * key stays empty until the item is first leased (jobstore.h: the file is read once, then) */
    [ST_ADD] = "INSERT OR IGNORE INTO items(path, key, size, state, attempts, updated, task, meta, ident) "
               "VALUES(?1, '', ?3, " QUEUED ", 0, ?4, ?5, ?6, ?7)",
    /* keyset paging by id (index items_state): each call continues after the last id it gave, no OFFSET scan */
    [ST_NEXT] = "SELECT id, path, key, size, attempts, state, task, meta FROM items WHERE state = " QUEUED
                " AND id > ?1 ORDER BY id LIMIT ?2",
    [ST_GET] = "SELECT id, path, key, size, attempts, state, task, meta FROM items WHERE id = ?1",
    /* leased again from leased: an item is leased once per stage (preprocess, then inference) */
    [ST_LEASE] = "UPDATE items SET state = " LEASED ", stage = ?2, worker = ?3, deadline = ?4, updated = ?5, "
                 "key = ?6 WHERE id = ?1 AND state IN " OPEN_STATES,
    [ST_REQUEUE] = "UPDATE items SET state = " QUEUED ", attempts = ?2, error = ?3, stage = NULL, worker = NULL, "
                   "deadline = NULL, updated = ?4 WHERE id = ?1 AND state IN " OPEN_STATES,
    /* key = ?2 (content hash + settings, proto.h): a result for other bytes or settings than the item's current
     * lease (a stale lease before the file changed, a forged one) does not finish it */
    [ST_FINISH] = "UPDATE items SET state = ?3, error = ?4, stage = NULL, worker = NULL, deadline = NULL, "
                  "updated = ?5, out_end = ?6 WHERE id = ?1 AND key = ?2 AND state IN " OPEN_STATES,
    /* leased (the items in flight: few) and states a newer paliflow may add: ranges of items_state; the rest
     * is kept in item_counts */
    [ST_COUNTS] = "SELECT (SELECT count(*) FROM items WHERE state = " LEASED "), "
                  "(SELECT count(*) FROM items WHERE state < " QUEUED " OR state > " FAILED ")",
    /* finished items whose record ends beyond the output's committed size: not in the output (any more) */
    [ST_BEYOND] = "UPDATE items SET state = " QUEUED ", out_end = NULL, error = NULL, updated = ?2 "
                  "WHERE out_end > ?1 AND state IN " FINAL_STATES,
    [ST_KEPT] = "SELECT k, n FROM item_counts",
    [ST_KEEP] = "UPDATE item_counts SET n = n + ?2 WHERE k = ?1",
    [ST_OPEN] = "SELECT 1 FROM items WHERE state IN " OPEN_STATES " LIMIT 1",
    [ST_STATE] = "SELECT state FROM items WHERE id = ?1",
};

struct pf_jobstore {
    sqlite3 *db;
    sqlite3_stmt *st[ST_COUNT];
    int in_tx;
    double tx_t0;      /* when the open transaction began (monotonic), for pf_jobstore_commit_due */
    int wal_frames;    /* frames in the WAL after the last commit (wal_hook), for pf_jobstore_commit */
    int64_t tx_ops;    /* updates in the open transaction */
    int64_t cnt_delta[CNT_N];   /* changes to item_counts not written yet (written at commit) */
    char *path;
    int lock_fd;   /* flock on <path>.lock (outfile.h): one process per job store */
    /* pf_jobstore_checkpoint_thread: WAL checkpoints on a connection and thread of their own */
    pthread_t ck_th;
    int ck_started, ck_stop;
    pthread_mutex_t ck_mu;
    pthread_cond_t ck_cv;
    sqlite3 *ck_db;
};

static double mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double unix_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int dberr(pf_jobstore *js, pf_err *err, const char *what)
{
    return pf_errf(err, "job store %s: %s: %s", js->path, what, sqlite3_errmsg(js->db));
}

static int exec(pf_jobstore *js, const char *sql, pf_err *err)
{
    char *msg = NULL;
    if (sqlite3_exec(js->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        pf_errf(err, "job store %s: %s", js->path, msg ? msg : sqlite3_errmsg(js->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

/* Whether QUERY (one parameter: NAME) gives a row: a column or a table of the schema. */
static int schema_has(pf_jobstore *js, const char *query, const char *name, int *have, pf_err *err)
{
    sqlite3_stmt *s = NULL;
    *have = 0;
    if (sqlite3_prepare_v2(js->db, query, -1, &s, NULL) != SQLITE_OK)
        return dberr(js, err, "read the schema");
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        *have = 1;
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : dberr(js, err, "read the schema");
}

static int has_column(pf_jobstore *js, const char *col, int *have, pf_err *err)
{
    return schema_has(js, "SELECT 1 FROM pragma_table_info('items') WHERE name = ?1", col, have, err);
}

static int has_table(pf_jobstore *js, const char *table, int *have, pf_err *err)
{
    return schema_has(js, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", table, have, err);
}

/* items.out_end: where the item's record ends in the output file (the sink's ack says), so that a restart
 * can tell which finished items the output no longer holds (pf_jobstore_requeue_beyond). Added to job stores
 * made before it; their finished items have none (NULL) and cannot be checked. */
static int add_out_end(pf_jobstore *js, pf_err *err)
{
    int have = 0;
    if (has_column(js, "out_end", &have, err))
        return -1;
    if (!have && exec(js, "ALTER TABLE items ADD COLUMN out_end INTEGER", err))
        return -1;
    /* Partial: only finished items have an offset, and only they are looked up by it (requeue_beyond's
     * out_end > size, shift_out_end); queued items, most of a fresh job, stay out of the index. */
    return exec(js, "CREATE INDEX IF NOT EXISTS items_out_end ON items(out_end) WHERE out_end IS NOT NULL", err);
}

/* items.ident / items.task / items.meta (issue 19): an item is an (ident, task) pair, so that one image can
 * carry several tasks and one file typed two ways is one item; ident is the canonical path (path stays as
 * found: workers read it, records show it), task the canonical JSON of the item's own task ('' = the job's),
 * meta the JSON its record gets (manifest id and extra columns). Job stores made before them had
 * `path UNIQUE`, which SQLite cannot drop in place: the table is rebuilt once, in one transaction (a crash
 * mid-way leaves the old table whole), ids and states kept (so out_end and resumes hold). */
static int add_task_columns(pf_jobstore *js, pf_err *err)
{
    int have = 0;
    if (has_column(js, "ident", &have, err))
        return -1;
    if (!have &&
        exec(js, "BEGIN IMMEDIATE;"
                 "CREATE TABLE items_v2(id INTEGER PRIMARY KEY, path TEXT NOT NULL, "
                 " key TEXT NOT NULL DEFAULT '', size INTEGER NOT NULL, state INTEGER NOT NULL DEFAULT " QUEUED ", "
                 " attempts INTEGER NOT NULL DEFAULT 0, stage TEXT, worker TEXT, deadline REAL, error TEXT, "
                 " updated REAL, out_end INTEGER, task TEXT NOT NULL DEFAULT '', meta TEXT, ident TEXT NOT NULL);"
                 "INSERT INTO items_v2(id, path, key, size, state, attempts, stage, worker, deadline, error, updated, "
                 " out_end, ident) SELECT id, path, key, size, state, attempts, stage, worker, deadline, error, "
                 " updated, out_end, path FROM items;"
                 "DROP TABLE items;"
                 "ALTER TABLE items_v2 RENAME TO items;"
                 "COMMIT;",
             err)) {
        sqlite3_exec(js->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    /* items_ident is the item's identity: ST_ADD's OR IGNORE relies on it to drop a pair already in the job. */
    return exec(js, "CREATE UNIQUE INDEX IF NOT EXISTS items_ident ON items(ident, task);"
                    "CREATE INDEX IF NOT EXISTS items_state ON items(state, id);",
                err);
}

/* Count the items into item_counts (made if missing), in one transaction: the kept counts start from here. */
static int count_items(pf_jobstore *js, pf_err *err)
{
    char sql[1200];
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE;"
             "CREATE TABLE IF NOT EXISTS item_counts(k INTEGER PRIMARY KEY, n INTEGER NOT NULL);"
             "INSERT OR REPLACE INTO item_counts VALUES(%d, (SELECT count(*) FROM items));"
             "INSERT OR REPLACE INTO item_counts VALUES(%d, (SELECT count(*) FROM items WHERE state = " DONE "));"
             "INSERT OR REPLACE INTO item_counts VALUES(%d, (SELECT count(*) FROM items WHERE state = " FAILED "));"
             "INSERT OR REPLACE INTO item_counts VALUES(%d, (SELECT count(*) FROM items WHERE state = " DONE
             " AND out_end IS NOT NULL));"
             "INSERT OR REPLACE INTO item_counts VALUES(%d, (SELECT count(*) FROM items WHERE state = " FAILED
             " AND out_end IS NOT NULL));"
             "COMMIT;",
             CNT_ALL, CNT_DONE, CNT_FAILED, CNT_DONE_PLACED, CNT_FAILED_PLACED);
    if (exec(js, sql, err)) {
        sqlite3_exec(js->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

/* item_counts (see CNT_ALL): made and counted once for a store that lacks it. */
static int ensure_counts(pf_jobstore *js, pf_err *err)
{
    int have = 0;
    if (has_table(js, "item_counts", &have, err))
        return -1;
    return have ? 0 : count_items(js, err);
}

int pf_jobstore_open(const char *path, pf_jobstore **out, pf_err *err)
{
    return pf_jobstore_open_held(path, -1, out, err);
}

int pf_jobstore_open_held(const char *path, int held_lock, pf_jobstore **out, pf_err *err)
{
    *out = NULL;
    pf_jobstore *js = calloc(1, sizeof *js);
    if (!js || !(js->path = strdup(path))) {
        free(js);
        return pf_errf(err, "job store %s: out of memory", path);
    }
    if (held_lock >= 0 ? pf_dblock_adopt(path, held_lock, &js->lock_fd, err)
                       : pf_dblock_acquire(path, &js->lock_fd, err)) {
        free(js->path);
        free(js);
        return -1;
    }
    if (sqlite3_open_v2(path, &js->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL) !=
        SQLITE_OK) {
        pf_errf(err, "job store %s: cannot open: %s", path, js->db ? sqlite3_errmsg(js->db) : "out of memory");
        pf_jobstore_close(js);
        return -1;
    }
    /* The flock above keeps other paliflow processes out, but not a reader such as the sqlite3 shell or a
     * monitoring script: wait up to 5 s for its lock instead of failing the job on SQLITE_BUSY. */
    sqlite3_busy_timeout(js->db, BUSY_MS);
    /* WAL: a commit appends pages to the log instead of rewriting the database, and readers never block the
     * producer. synchronous=NORMAL: in WAL mode it still cannot corrupt the file; a power cut may lose the last
     * commits, which only redoes those items (jobstore.h says why that is safe). */
    /* items_state (state, id) serves ST_NEXT's "queued after id" and the counts by state without a scan. */
    if (exec(js, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", err) ||
        exec(js, "CREATE TABLE IF NOT EXISTS job(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
                 "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, path TEXT NOT NULL, "
                 " key TEXT NOT NULL DEFAULT '', size INTEGER NOT NULL, state INTEGER NOT NULL DEFAULT " QUEUED ", "
                 " attempts INTEGER NOT NULL DEFAULT 0, stage TEXT, worker TEXT, deadline REAL, error TEXT, "
                 " updated REAL, out_end INTEGER, task TEXT NOT NULL DEFAULT '', meta TEXT, ident TEXT NOT NULL);"
                 "CREATE INDEX IF NOT EXISTS items_state ON items(state, id);",
             err) ||
        /* out_end first: add_task_columns' rebuild copies it; then again, for the index the rebuild dropped */
        add_out_end(js, err) || add_task_columns(js, err) || add_out_end(js, err) || ensure_counts(js, err)) {
        pf_jobstore_close(js);
        return -1;
    }
    for (int i = 0; i < ST_COUNT; i++) {
        if (sqlite3_prepare_v2(js->db, g_sql[i], -1, &js->st[i], NULL) != SQLITE_OK) {
            dberr(js, err, "prepare");
            pf_jobstore_close(js);
            return -1;
        }
    }
    *out = js;
    return 0;
}

static void checkpoint_stop(pf_jobstore *js);
static int write_counts(pf_jobstore *js, pf_err *err);

void pf_jobstore_close(pf_jobstore *js)
{
    if (!js)
        return;
    checkpoint_stop(js);
    if (js->in_tx)   /* the group commit still held back (pf_jobstore_commit_due): closing is its due time */
        sqlite3_exec(js->db, "COMMIT", NULL, NULL, NULL);
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(js->st[i]);
    sqlite3_close(js->db);
    if (js->lock_fd >= 0)
        close(js->lock_fd);   /* after SQLite let go of the file */
    free(js->path);
    free(js);
}

/* Why the writer restarts the WAL: SQLite writes the WAL from its start again only when a write transaction
 * begins after a checkpoint copied every frame. The producer holds a write transaction nearly all the time
 * (group commits, the scan's inserts), so the PASSIVE checkpoints of checkpoint_main never catch up and the WAL
 * grew for the whole job: 174 MB after a 1M-file scan, as big as the store and every page written twice. Once
 * it holds WAL_RESTART_FRAMES (counted by the WAL hook), the writer runs a RESTART checkpoint right after a
 * commit, when it holds no transaction: it copies the few frames the background checkpoints left and makes the
 * next commit start the WAL over (journal_size_limit then cuts the file back). It waits at most 50 ms for a
 * reader or a running checkpoint, else it tries after a later commit. */
#define WAL_RESTART_FRAMES 16384   /* 64 MiB of 4 KiB pages */

static int wal_hook(void *arg, sqlite3 *db, const char *name, int frames)
{
    (void)db;
    (void)name;
    ((pf_jobstore *)arg)->wal_frames = frames;
    return SQLITE_OK;
}

/* The checkpointer: a PASSIVE checkpoint every 0.5 s copies what the WAL holds into the database file and
 * syncs it, never waiting for the writer (it stops at the oldest snapshot still read) nor making it wait.
 *
 * The WAL is started over by the writer itself (pf_jobstore_commit). */
static void *checkpoint_main(void *arg)
{
    pf_jobstore *js = arg;
    pthread_mutex_lock(&js->ck_mu);
    while (!js->ck_stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 500000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&js->ck_cv, &js->ck_mu, &ts);
        if (js->ck_stop)
            break;
        pthread_mutex_unlock(&js->ck_mu);
        sqlite3_wal_checkpoint_v2(js->ck_db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
        pthread_mutex_lock(&js->ck_mu);
    }
    pthread_mutex_unlock(&js->ck_mu);
    return NULL;
}

int pf_jobstore_checkpoint_thread(pf_jobstore *js, pf_err *err)
{
    if (js->ck_started)
        return 0;
    if (sqlite3_open_v2(js->path, &js->ck_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        pf_errf(err, "job store %s: cannot open it for checkpoints: %s", js->path,
                js->ck_db ? sqlite3_errmsg(js->ck_db) : "out of memory");
        sqlite3_close(js->ck_db);
        js->ck_db = NULL;
        return -1;
    }
    sqlite3_busy_timeout(js->ck_db, 100);
    pthread_mutex_init(&js->ck_mu, NULL);
    pthread_cond_init(&js->ck_cv, NULL);
    int rc = pthread_create(&js->ck_th, NULL, checkpoint_main, js);
    if (rc) {
        pthread_cond_destroy(&js->ck_cv);
        pthread_mutex_destroy(&js->ck_mu);
        sqlite3_close(js->ck_db);
        js->ck_db = NULL;
        return pf_errf(err, "job store %s: cannot start the checkpoint thread: %s", js->path, strerror(rc));
    }
    js->ck_started = 1;
    /* the writer's own commits no longer checkpoint (that is the thread's job now, but for the restarts of
     * pf_jobstore_commit, whose WAL is then cut back to 64 MiB) */
    if (exec(js, "PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864", err))
        return -1;
    sqlite3_wal_hook(js->db, wal_hook, js);   /* after the pragma, which clears any hook */
    return 0;
}

static void checkpoint_stop(pf_jobstore *js)
{
    if (!js->ck_started)
        return;
    pthread_mutex_lock(&js->ck_mu);
    js->ck_stop = 1;
    pthread_cond_signal(&js->ck_cv);
    pthread_mutex_unlock(&js->ck_mu);
    pthread_join(js->ck_th, NULL);
    pthread_cond_destroy(&js->ck_cv);
    pthread_mutex_destroy(&js->ck_mu);
    sqlite3_close(js->ck_db);   /* the main connection, closed last, checkpoints what is left */
    js->ck_db = NULL;
    js->ck_started = 0;
}

int pf_jobstore_begin(pf_jobstore *js, pf_err *err)
{
    if (js->in_tx)
        return 0;
    /* IMMEDIATE takes the write lock now: a deferred transaction that reads first and writes later can fail
     * with SQLITE_BUSY at its first write (not retried by the busy handler), after work was already done. */
    if (exec(js, "BEGIN IMMEDIATE", err))
        return -1;
    js->in_tx = 1;
    js->tx_t0 = mono_now();
    js->tx_ops = 0;
    return 0;
}

int pf_jobstore_commit(pf_jobstore *js, pf_err *err)
{
    if (!js->in_tx)
        return 0;
    if (write_counts(js, err))
        return -1;
    js->in_tx = 0;
    if (exec(js, "COMMIT", err))
        return -1;
    if (js->ck_started && js->wal_frames >= WAL_RESTART_FRAMES) {
        sqlite3_busy_timeout(js->db, 50);
        if (sqlite3_wal_checkpoint_v2(js->db, NULL, SQLITE_CHECKPOINT_RESTART, NULL, NULL) == SQLITE_OK)
            js->wal_frames = 0;
        sqlite3_busy_timeout(js->db, BUSY_MS);
    }
    return 0;
}

int pf_jobstore_commit_due(pf_jobstore *js, double max_age_s, int64_t max_ops, pf_err *err)
{
    if (!js->in_tx || (js->tx_ops < max_ops && mono_now() - js->tx_t0 < max_age_s))
        return 0;
    return pf_jobstore_commit(js, err);
}

int pf_jobstore_in_tx(const pf_jobstore *js) { return js->in_tx; }

/* A prepared statement ready for new bindings: reset (a previous step may have left it mid-row) and its old
 * bindings cleared, so that a parameter a caller leaves unbound is NULL, not the last item's value (ST_FINISH's
 * error and out_end, ST_REQUEUE's reason rely on it). */
static sqlite3_stmt *stmt(pf_jobstore *js, int which)
{
    sqlite3_stmt *s = js->st[which];
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return s;
}

/* Step an UPDATE/INSERT once. tx_ops counts it for pf_jobstore_commit_due's size bound. */
static int run_update(pf_jobstore *js, sqlite3_stmt *s, const char *what, int *changed, pf_err *err)
{
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_DONE)
        return dberr(js, err, what);
    js->tx_ops++;
    if (changed)
        *changed = sqlite3_changes(js->db) > 0;
    return 0;
}

/* ---- item_counts (see CNT_ALL) ---- */

static void count(pf_jobstore *js, int k, int64_t d) { js->cnt_delta[k] += d; }

/* Write the kept changes into item_counts: in the open transaction, before its COMMIT. */
static int write_counts(pf_jobstore *js, pf_err *err)
{
    for (int k = 0; k < CNT_N; k++) {
        if (!js->cnt_delta[k])
            continue;
        sqlite3_stmt *s = stmt(js, ST_KEEP);
        sqlite3_bind_int(s, 1, k);
        sqlite3_bind_int64(s, 2, js->cnt_delta[k]);
        if (run_update(js, s, "keep the item counts", NULL, err))
            return -1;
        js->cnt_delta[k] = 0;
    }
    return 0;
}

/* The kept counts as this connection sees them: item_counts plus the changes not written yet. */
static int read_counts(pf_jobstore *js, int64_t n[CNT_N], pf_err *err)
{
    memcpy(n, js->cnt_delta, CNT_N * sizeof n[0]);
    sqlite3_stmt *s = stmt(js, ST_KEPT);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
        int k = sqlite3_column_int(s, 0);
        if (k >= 0 && k < CNT_N)
            n[k] += sqlite3_column_int64(s, 1);
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : dberr(js, err, "read the item counts");
}

/* A change that moves counts made outside a transaction gets one of its own, so that the change and its counts
 * are committed together (the producer's changes are inside its group commits already). end_own commits it, or
 * rolls it back when the change failed (RC != 0), dropping the counts it made. */
static int begin_own(pf_jobstore *js, int *own, pf_err *err)
{
    *own = !js->in_tx;
    return *own ? pf_jobstore_begin(js, err) : 0;
}

static int end_own(pf_jobstore *js, int own, int rc, pf_err *err)
{
    if (!own)
        return rc;
    if (!rc)
        return pf_jobstore_commit(js, err);
    sqlite3_exec(js->db, "ROLLBACK", NULL, NULL, NULL);
    js->in_tx = 0;
    memset(js->cnt_delta, 0, sizeof js->cnt_delta);
    return rc;
}

int pf_jobstore_meta_get(pf_jobstore *js, const char *k, char **v, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_META_GET);
    sqlite3_bind_text(s, 1, k, -1, SQLITE_STATIC);
    *v = NULL;
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(s, 0);
        *v = strdup(t ? (const char *)t : "");
        sqlite3_reset(s);
        return *v ? 0 : pf_errf(err, "job store: out of memory");
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? 0 : dberr(js, err, "read job settings");
}

int pf_jobstore_meta_set(pf_jobstore *js, const char *k, const char *v, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_META_SET);
    sqlite3_bind_text(s, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, v, -1, SQLITE_STATIC);
    return run_update(js, s, "write job settings", NULL, err);
}

int pf_jobstore_has_path(pf_jobstore *js, const char *path, int *has, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_HAS);
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_reset(s);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return dberr(js, err, "look up a path");
    *has = rc == SQLITE_ROW;
    return 0;
}

int pf_jobstore_add(pf_jobstore *js, const char *path, int64_t size, int64_t *id, pf_err *err)
{
    return pf_jobstore_add_item(js, path, path, "", NULL, size, id, err);
}

int pf_jobstore_add_item(pf_jobstore *js, const char *path, const char *ident, const char *task, const char *meta,
                         int64_t size, int64_t *id, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_ADD);
    sqlite3_bind_text(s, 1, path, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 7, ident ? ident : path, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, task ? task : "", -1, SQLITE_STATIC);
    if (meta)
        sqlite3_bind_text(s, 6, meta, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 3, size);
    sqlite3_bind_double(s, 4, unix_now());
    int changed = 0, own;
    if (begin_own(js, &own, err))
        return -1;
    int rc = run_update(js, s, "add an item", &changed, err);
    *id = !rc && changed ? sqlite3_last_insert_rowid(js->db) : -1;
    if (!rc && changed)
        count(js, CNT_ALL, 1);
    return end_own(js, own, rc, err);
}

/* Copy a row out of S (sqlite3_column_text pointers die at the next step or reset). -1: out of memory. */
static int read_row(sqlite3_stmt *s, pf_item_row *r)
{
    memset(r, 0, sizeof *r);
    r->id = sqlite3_column_int64(s, 0);
    const unsigned char *p = sqlite3_column_text(s, 1);
    const unsigned char *k = sqlite3_column_text(s, 2);
    r->path = strdup(p ? (const char *)p : "");
    snprintf(r->key, sizeof r->key, "%s", k ? (const char *)k : "");
    r->size = sqlite3_column_int64(s, 3);
    r->attempts = sqlite3_column_int(s, 4);
    r->state = sqlite3_column_int(s, 5);
    const unsigned char *t = sqlite3_column_text(s, 6), *m = sqlite3_column_text(s, 7);
    r->task = t && *t ? strdup((const char *)t) : NULL;
    r->meta = m && *m ? strdup((const char *)m) : NULL;
    return r->path && (!t || !*t || r->task) && (!m || !*m || r->meta) ? 0 : -1;
}

int pf_jobstore_next_queued(pf_jobstore *js, int64_t after_id, size_t max, pf_item_row *rows, size_t *n,
                            pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_NEXT);
    sqlite3_bind_int64(s, 1, after_id);
    sqlite3_bind_int64(s, 2, (sqlite3_int64)max);
    *n = 0;
    int rc;
    while (*n < max && (rc = sqlite3_step(s)) == SQLITE_ROW) {
        if (read_row(s, &rows[*n])) {
            sqlite3_reset(s);
            pf_item_rows_free(rows, *n);
            *n = 0;
            return pf_errf(err, "job store: out of memory");
        }
        (*n)++;
    }
    sqlite3_reset(s);
    /* an error mid-way gives no rows at all: the caller never hands out half a page it thinks is whole */
    if (*n < max && rc != SQLITE_DONE) {
        pf_item_rows_free(rows, *n);
        *n = 0;
        return dberr(js, err, "read queued items");
    }
    return 0;
}

void pf_item_rows_free(pf_item_row *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(rows[i].path);
        free(rows[i].task);
        free(rows[i].meta);
        rows[i].path = rows[i].task = rows[i].meta = NULL;
    }
}

int pf_jobstore_get(pf_jobstore *js, int64_t id, pf_item_row *row, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_GET);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        int bad = read_row(s, row);
        sqlite3_reset(s);
        return bad ? pf_errf(err, "job store: out of memory") : 0;
    }
    sqlite3_reset(s);
    return rc == SQLITE_DONE ? pf_errf(err, "job store %s: no item %lld", js->path, (long long)id)
                             : dberr(js, err, "read an item");
}

int pf_jobstore_state(pf_jobstore *js, int64_t id, int *state, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_STATE);
    sqlite3_bind_int64(s, 1, id);
    int rc = sqlite3_step(s);
    *state = rc == SQLITE_ROW ? sqlite3_column_int(s, 0) : -1;
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : dberr(js, err, "read an item's state");
}

int pf_jobstore_lease(pf_jobstore *js, int64_t id, const char *key, const char *stage, const char *worker,
                      double deadline_unix, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_LEASE);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_text(s, 6, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, stage, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, worker, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 4, deadline_unix);
    sqlite3_bind_double(s, 5, unix_now());
    return run_update(js, s, "lease an item", NULL, err);
}

int pf_jobstore_requeue(pf_jobstore *js, int64_t id, int attempts, const char *reason, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_REQUEUE);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_int(s, 2, attempts);
    if (reason)
        sqlite3_bind_text(s, 3, reason, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 4, unix_now());
    return run_update(js, s, "requeue an item", NULL, err);
}

int pf_jobstore_finish(pf_jobstore *js, int64_t id, const char *key, int ok, const char *error, int *changed,
                       pf_err *err)
{
    return pf_jobstore_finish_at(js, id, key, ok, error, -1, changed, err);
}

int pf_jobstore_finish_at(pf_jobstore *js, int64_t id, const char *key, int ok, const char *error, int64_t out_end,
                          int *changed, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_FINISH);
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 3, ok ? PF_ITEM_DONE : PF_ITEM_FAILED);
    if (error)
        sqlite3_bind_text(s, 4, error, -1, SQLITE_STATIC);
    sqlite3_bind_double(s, 5, unix_now());
    if (out_end >= 0)
        sqlite3_bind_int64(s, 6, out_end);
    int moved = 0, own;
    if (begin_own(js, &own, err))
        return -1;
    int rc = run_update(js, s, "finish an item", &moved, err);
    if (!rc && moved) {
        count(js, ok ? CNT_DONE : CNT_FAILED, 1);
        if (out_end >= 0)
            count(js, ok ? CNT_DONE_PLACED : CNT_FAILED_PLACED, 1);
    }
    if (changed)
        *changed = moved;
    return end_own(js, own, rc, err);
}

int pf_jobstore_set_reason(pf_jobstore *js, int64_t id, const char *key, const char *error, pf_err *err)
{
    /* rare (a race of two messages): prepared here, not at open */
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(js->db, "UPDATE items SET error = ?3 WHERE id = ?1 AND key = ?2 AND state = " FAILED, -1,
                           &s, NULL) != SQLITE_OK)
        return dberr(js, err, "set an item's error reason");
    sqlite3_bind_int64(s, 1, id);
    sqlite3_bind_text(s, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, error, -1, SQLITE_STATIC);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : dberr(js, err, "set an item's error reason");
}

int pf_jobstore_requeue_beyond(pf_jobstore *js, int64_t out_size, int64_t *n_done, int64_t *n_failed, pf_err *err)
{
    *n_done = *n_failed = 0;
    /* what goes back, by final state, first (through the out_end index: no scan of the whole job) */
    sqlite3_stmt *c = NULL;
    if (sqlite3_prepare_v2(js->db, "SELECT state, count(*) FROM items WHERE out_end > ?1 AND state IN " FINAL_STATES
                                   " GROUP BY state", -1, &c, NULL) != SQLITE_OK)
        return dberr(js, err, "count items missing from the output");
    sqlite3_bind_int64(c, 1, out_size);
    int rc;
    while ((rc = sqlite3_step(c)) == SQLITE_ROW)
        *(sqlite3_column_int(c, 0) == PF_ITEM_DONE ? n_done : n_failed) = sqlite3_column_int64(c, 1);
    sqlite3_finalize(c);
    if (rc != SQLITE_DONE)
        return dberr(js, err, "count items missing from the output");
    if (*n_done + *n_failed == 0)
        return 0;
    sqlite3_stmt *s = stmt(js, ST_BEYOND);
    sqlite3_bind_int64(s, 1, out_size);
    sqlite3_bind_double(s, 2, unix_now());
    int own;
    if (begin_own(js, &own, err))
        return -1;
    rc = run_update(js, s, "requeue items missing from the output", NULL, err);
    if (!rc) {   /* each had an offset (out_end > out_size >= -1) */
        count(js, CNT_DONE, -*n_done);
        count(js, CNT_DONE_PLACED, -*n_done);
        count(js, CNT_FAILED, -*n_failed);
        count(js, CNT_FAILED_PLACED, -*n_failed);
    }
    return end_own(js, own, rc, err);
}

int pf_jobstore_count_placed(pf_jobstore *js, int64_t *n, pf_err *err)
{
    int64_t c[CNT_N];
    *n = 0;
    if (read_counts(js, c, err))
        return -1;
    *n = c[CNT_DONE_PLACED] + c[CNT_FAILED_PLACED];
    return 0;
}

int pf_jobstore_count_unplaced(pf_jobstore *js, int64_t *n, pf_err *err)
{
    int64_t c[CNT_N];
    *n = 0;
    if (read_counts(js, c, err))
        return -1;
    *n = c[CNT_DONE] - c[CNT_DONE_PLACED] + c[CNT_FAILED] - c[CNT_FAILED_PLACED];
    return 0;
}

int pf_jobstore_requeue_failed(pf_jobstore *js, int64_t *n, pf_err *err)
{
    /* attempts back to 0: --retry-failed gives each failure the full number of attempts again. out_end cleared:
     * a queued item has no record of its own to reconcile; its old error record is superseded (compact.c). */
    int own;
    *n = 0;
    if (begin_own(js, &own, err))
        return -1;
    int rc = exec(js, "UPDATE items SET state = " QUEUED ", attempts = 0, out_end = NULL, stage = NULL, worker = NULL, "
                      "deadline = NULL WHERE state = " FAILED, err);
    int64_t c[CNT_N];
    if (!rc && !(rc = read_counts(js, c, err))) {   /* every failed item went, offset or not */
        *n = sqlite3_changes(js->db);
        count(js, CNT_FAILED, -c[CNT_FAILED]);
        count(js, CNT_FAILED_PLACED, -c[CNT_FAILED_PLACED]);
    }
    return end_own(js, own, rc, err);
}

/* compact.c removed LEN bytes that ended at END from the output: every record after them moved back by LEN,
 * so their offsets follow (else the next reconciliation would take them for lost). */
int pf_jobstore_shift_out_end(pf_jobstore *js, int64_t end, int64_t len, pf_err *err)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(js->db, "UPDATE items SET out_end = out_end - ?2 WHERE out_end >= ?1", -1, &s, NULL) !=
        SQLITE_OK)
        return dberr(js, err, "move record offsets");
    sqlite3_bind_int64(s, 1, end);
    sqlite3_bind_int64(s, 2, len);
    int rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : dberr(js, err, "move record offsets");
}

int pf_jobstore_reset_leases(pf_jobstore *js, int64_t *n, pf_err *err)
{
    /* At startup no worker holds a lease of this process's previous life: every leased item is queued again
     * (attempts unchanged: the crash was not the item's fault). */
    if (exec(js, "UPDATE items SET state = " QUEUED ", stage = NULL, worker = NULL, deadline = NULL WHERE state = "
                 LEASED, err))
        return -1;
    *n = sqlite3_changes(js->db);
    return 0;
}

int pf_jobstore_counts(pf_jobstore *js, int64_t counts[4], pf_err *err)
{
    memset(counts, 0, 4 * sizeof counts[0]);
    int64_t c[CNT_N];
    if (read_counts(js, c, err))
        return -1;
    sqlite3_stmt *s = stmt(js, ST_COUNTS);
    int rc = sqlite3_step(s);
    if (rc == SQLITE_ROW) {
        int64_t other = sqlite3_column_int64(s, 1);
        counts[PF_ITEM_LEASED] = sqlite3_column_int64(s, 0);
        counts[PF_ITEM_DONE] = c[CNT_DONE];
        counts[PF_ITEM_FAILED] = c[CNT_FAILED];
        counts[PF_ITEM_QUEUED] =
            c[CNT_ALL] - other - counts[PF_ITEM_LEASED] - counts[PF_ITEM_DONE] - counts[PF_ITEM_FAILED];
    }
    sqlite3_reset(s);
    return rc == SQLITE_ROW ? 0 : dberr(js, err, "count items");
}

int pf_jobstore_recount(pf_jobstore *js, pf_err *err)
{
    int was = js->in_tx;
    if (pf_jobstore_commit(js, err) || count_items(js, err))
        return -1;
    return was ? pf_jobstore_begin(js, err) : 0;
}

int pf_jobstore_any_open(pf_jobstore *js, int *any, pf_err *err)
{
    sqlite3_stmt *s = stmt(js, ST_OPEN);
    int rc = sqlite3_step(s);
    *any = rc == SQLITE_ROW;
    sqlite3_reset(s);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : dberr(js, err, "look for items left to do");
}

int pf_jobstore_error_reasons(pf_jobstore *js, size_t max, void (*cb)(const char *reason, int64_t n, void *arg),
                              void *arg, pf_err *err)
{
    sqlite3_stmt *s = NULL;
    if (sqlite3_prepare_v2(js->db,
                           "SELECT coalesce(error, ''), count(*) AS n FROM items WHERE state = " FAILED
                           " GROUP BY 1 ORDER BY n DESC, 1 LIMIT ?1",
                           -1, &s, NULL) != SQLITE_OK)
        return dberr(js, err, "error reasons");
    sqlite3_bind_int64(s, 1, (sqlite3_int64)max);
    int rc;
    while ((rc = sqlite3_step(s)) == SQLITE_ROW)
        cb((const char *)sqlite3_column_text(s, 0), sqlite3_column_int64(s, 1), arg);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : dberr(js, err, "error reasons");
}
