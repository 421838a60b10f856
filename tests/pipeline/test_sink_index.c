/* The sink's record index (pipeline/sink_index.c): dedupe across restarts without reading the output again,
 * the checkpoint never ahead of the output, a rollback that forgets the batch, an output that no longer
 * matches (cut, replaced, edited) making it start over, supersession for compaction; its identity sets as
 * sorted runs (pipeline/sink_idset.c): every identity found in whichever run holds it, merges that keep each
 * one exactly once, a transaction failed at any point of a flush or merge or a kill -9 leaving a consistent
 * index; and the views' safe names (pipeline/out_names.c). */
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipeline/out_view.h"
#include "pipeline/sink_idset.h"
#include "pipeline/sink_index.h"

#define PF_TEST_TMP_NAME "pf_sink_index"
#include "tests/support/test_tmp.h"

#define KEY_A "00000000000000000000000000000001-00000000000000aa"
#define KEY_A2 "00000000000000000000000000000002-00000000000000aa"   /* same settings, other bytes */

static int open_out(const char *name, char *path, size_t cap)
{
    snprintf(path, cap, "%s/%s", g_tmp, name);
    int fd = open(path, O_RDWR | O_CREAT | O_APPEND, 0644);
    assert_true(fd >= 0);
    return fd;
}

static void append(int fd, const char *text)
{
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
}

static pf_sink_index *reopen(const char *path, int fd, int64_t *from)
{
    pf_sink_index *ix = NULL;
    pf_err e = {{0}};
    assert_int_equal(pf_sink_index_open(path, fd, &ix, from, &e), 0);
    return ix;
}

static void test_dedupe_across_restarts(void **state)
{
    (void)state;
    char path[300];
    int fd = open_out("a.jsonl", path, sizeof path);
    pf_err e = {{0}};
    int64_t from = -1;
    pf_sink_index *ix = reopen(path, fd, &from);
    assert_int_equal(from, 0);
    pf_rec_id a = pf_rec_identity(KEY_A, "x.jpg", 1), b = pf_rec_identity(KEY_A, "y.jpg", 1);
    assert_int_equal(pf_sink_index_add(ix, a, &e), 1);
    assert_int_equal(pf_sink_index_add(ix, a, &e), 0);   /* a duplicate inside the open batch */
    assert_int_equal(pf_sink_index_add(ix, b, &e), 1);
    append(fd, "{\"r\":1}\n{\"r\":2}\n");
    assert_int_equal(pf_sink_index_commit(ix, fd, 16, &e), 0);
    assert_int_equal(pf_sink_index_count(ix), 2);
    /* a batch that never reached the output: rolled back, as a kill -9 before the commit would */
    pf_rec_id c = pf_rec_identity(KEY_A, "z.jpg", 1);
    assert_int_equal(pf_sink_index_add(ix, c, &e), 1);
    pf_sink_index_rollback(ix);
    assert_int_equal(pf_sink_index_has(ix, c, &e), 0);
    pf_sink_index_close(ix);
    /* restart: the checkpoint, nothing to read again; what was committed is still known */
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 16);
    assert_int_equal(pf_sink_index_count(ix), 2);
    assert_int_equal(pf_sink_index_has(ix, a, &e), 1);
    assert_int_equal(pf_sink_index_has(ix, c, &e), 0);
    pf_sink_index_close(ix);
    /* records written after the checkpoint (synced, index commit lost): the caller scans from 16 */
    append(fd, "{\"r\":3}\n");
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 16);
    pf_sink_index_close(ix);
    close(fd);
}

/* Content-key identities (--path-only results): kept across restarts, not counted as records; an index made
 * before they existed (version 1) starts over, so that they are rebuilt from the output. */
static void test_content_keys(void **state)
{
    (void)state;
    char path[300];
    int fd = open_out("c.jsonl", path, sizeof path);
    pf_err e = {{0}};
    int64_t from = -1;
    pf_sink_index *ix = reopen(path, fd, &from);
    pf_rec_id rec = pf_rec_identity(KEY_A, "x.jpg", 1), ck = pf_rec_identity(KEY_A2, "x.jpg", 1);
    assert_int_equal(pf_sink_index_add(ix, rec, &e), 1);
    assert_int_equal(pf_sink_index_add_content(ix, ck, &e), 1);
    assert_int_equal(pf_sink_index_add_content(ix, ck, &e), 0);
    assert_int_equal(pf_sink_index_count(ix), 1);
    assert_int_equal(pf_sink_index_has(ix, ck, &e), 0);   /* two sets: a content key is no record identity */
    append(fd, "{\"r\":1}\n");
    assert_int_equal(pf_sink_index_commit(ix, fd, 8, &e), 0);
    pf_sink_index_close(ix);
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 8);
    assert_int_equal(pf_sink_index_count(ix), 1);
    assert_int_equal(pf_sink_index_has_content(ix, ck, &e), 1);
    pf_sink_index_close(ix);
    /* the same index as version 1 or 2 wrote it: rebuilt from the output */
    char seen[320];
    snprintf(seen, sizeof seen, "%s.seen", path);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(seen, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET v=1 WHERE k='version'", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 0);
    assert_int_equal(pf_sink_index_has_content(ix, ck, &e), 0);
    assert_int_equal(pf_sink_index_add_content(ix, ck, &e), 1);
    assert_int_equal(pf_sink_index_commit(ix, fd, 8, &e), 0);
    pf_sink_index_close(ix);
    assert_int_equal(sqlite3_open(seen, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET v=2 WHERE k='version'", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 0);
    assert_int_equal(pf_sink_index_has_content(ix, ck, &e), 0);
    pf_sink_index_close(ix);
    close(fd);
}

static void test_mismatch_starts_over(void **state)
{
    (void)state;
    char path[300];
    int fd = open_out("b.jsonl", path, sizeof path);
    pf_err e = {{0}};
    int64_t from = -1;
    pf_sink_index *ix = reopen(path, fd, &from);
    assert_int_equal(pf_sink_index_add(ix, pf_rec_identity(KEY_A, "x.jpg", 1), &e), 1);
    append(fd, "{\"r\":1}\n");
    assert_int_equal(pf_sink_index_commit(ix, fd, 8, &e), 0);
    pf_sink_index_close(ix);
    /* edited in place: same size, other bytes */
    assert_int_equal(ftruncate(fd, 0), 0);
    append(fd, "{\"q\":1}\n");
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 0);
    assert_int_equal(pf_sink_index_count(ix), 0);
    assert_int_equal(pf_sink_index_has(ix, pf_rec_identity(KEY_A, "x.jpg", 1), &e), 0);
    assert_int_equal(pf_sink_index_commit(ix, fd, 8, &e), 0);
    pf_sink_index_close(ix);
    /* cut shorter than the checkpoint */
    assert_int_equal(ftruncate(fd, 3), 0);
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 0);
    pf_sink_index_close(ix);
    close(fd);
    /* another file under the same name (a new inode) */
    char p2[320];
    snprintf(p2, sizeof p2, "%s.new", path);
    int f2 = open(p2, O_RDWR | O_CREAT | O_APPEND, 0644);
    append(f2, "{\"q\":1}\n");
    assert_int_equal(rename(p2, path), 0);
    ix = reopen(path, f2, &from);
    assert_int_equal(pf_sink_index_commit(ix, f2, 8, &e), 0);
    pf_sink_index_close(ix);
    int f3 = open(path, O_RDWR | O_APPEND);
    ix = reopen(path, f3, &from);
    assert_int_equal(from, 8);   /* the same file again: matches */
    pf_sink_index_close(ix);
    close(f2);
    close(f3);
}

static void test_superseded(void **state)
{
    (void)state;
    char path[300];
    int fd = open_out("c.jsonl", path, sizeof path);
    pf_err e = {{0}};
    int64_t from = -1;
    pf_sink_index *ix = reopen(path, fd, &from);
    pf_rec_id s = pf_rec_supersede_ident(KEY_A, "x.jpg");
    assert_int_equal(pf_sink_index_note_result(ix, pf_rec_supersede_ident(KEY_A, "y.jpg"), &e), 0);
    assert_int_equal(pf_sink_index_note_error(ix, s, &e), 0);
    /* the file was fixed: other bytes, same item and task: its error is superseded */
    assert_true(pf_rec_supersede_ident(KEY_A2, "x.jpg").hi == s.hi);
    assert_int_equal(pf_sink_index_note_result(ix, pf_rec_supersede_ident(KEY_A2, "x.jpg"), &e), 1);
    append(fd, "{}\n");
    assert_int_equal(pf_sink_index_commit(ix, fd, 3, &e), 0);
    assert_int_equal(pf_sink_index_superseded(ix), 1);
    pf_sink_index_close(ix);
    ix = reopen(path, fd, &from);
    assert_int_equal(pf_sink_index_superseded(ix), 1);
    pf_rec_id gone = pf_rec_identity(KEY_A, "x.jpg", 0);
    assert_int_equal(pf_sink_index_add(ix, gone, &e), 1);
    assert_int_equal(pf_sink_index_commit(ix, fd, 3, &e), 0);
    assert_int_equal(pf_sink_index_compacted(ix, &gone, 1, fd, 3, &e), 0);
    assert_int_equal(pf_sink_index_superseded(ix), 0);
    assert_int_equal(pf_sink_index_has(ix, gone, &e), 0);
    pf_sink_index_close(ix);
    close(fd);
}

/* ---- the identity sets as runs (sink_idset.h) ---- */

/* The I-th test identity: random-looking bits, as real ones (xxh3 hashes) are. */
static pf_rec_id test_id(uint64_t i)
{
    uint64_t z = i * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
    pf_rec_id id;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    id.hi = z ^ (z >> 27);
    z = (id.hi ^ (id.hi >> 31)) * 0x94d049bb133111ebull;
    id.lo = z ^ (z >> 29);
    return id;
}

static sqlite3 *open_set_db(const char *name, pf_idset **set)
{
    sqlite3 *db = NULL;
    pf_err e = {{0}};
    assert_int_equal(sqlite3_open(tmp_path(name), &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA page_size=4096; PRAGMA journal_mode=TRUNCATE; PRAGMA synchronous=OFF; "
                                  "PRAGMA secure_delete=OFF",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(pf_idset_schema(db, name, &e), 0);
    assert_int_equal(pf_idset_open(db, name, 0, set, &e), 0);
    return db;
}

static void sql_ok(sqlite3 *db, const char *sql) { assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK); }

static int64_t sql_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Rows in the live runs of set 0 (every table a lookup probes), and how many distinct identities they hold. */
static void live_rows(sqlite3 *db, int64_t *rows, int64_t *distinct)
{
    char sql[8192] = "", q[8400];
    size_t k = 0;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT t FROM runs WHERE kind=0 AND building=0", -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW)
        k += (size_t)snprintf(sql + k, sizeof sql - k, "%sSELECT id FROM run%lld", k ? " UNION ALL " : "",
                              (long long)sqlite3_column_int64(st, 0));
    sqlite3_finalize(st);
    assert_true(k > 0 && k < sizeof sql - 1);
    snprintf(q, sizeof q, "SELECT count(*) FROM (%s)", sql);
    *rows = sql_int(db, q);
    snprintf(q, sizeof q, "SELECT count(DISTINCT id) FROM (%s)", sql);
    *distinct = sql_int(db, q);
}

/* Commit batches of BATCH new identities FROM.. (each batch one transaction, as the sink's commits). */
static void add_batches(sqlite3 *db, pf_idset *set, uint64_t from, int batches, int batch)
{
    pf_err e = {{0}};
    for (int b = 0; b < batches; b++) {
        sql_ok(db, "BEGIN");
        for (int i = 0; i < batch; i++)
            assert_int_equal(pf_idset_add(set, test_id(from + (uint64_t)b * (uint64_t)batch + (uint64_t)i), &e), 1);
        assert_int_equal(pf_idset_add(set, test_id(from + (uint64_t)b * (uint64_t)batch), &e), 0);   /* in the batch */
        assert_int_equal(pf_idset_flush(set, &e), 0);
        sql_ok(db, "COMMIT");
    }
}

/* Every STRIDE-th identity of FROM..TO is in the set, TO and beyond are not (in one read transaction, as the
 * sink's lookups are: outside one each lookup would take and drop the file lock). */
static void assert_holds_every(sqlite3 *db, pf_idset *set, uint64_t from, uint64_t to, uint64_t stride)
{
    pf_err e = {{0}};
    sql_ok(db, "BEGIN");
    for (uint64_t i = from; i < to; i += stride)
        assert_int_equal(pf_idset_has(set, test_id(i), &e), 1);
    assert_int_equal(pf_idset_has(set, test_id(to), &e), 0);
    assert_int_equal(pf_idset_has(set, test_id(to + 12345), &e), 0);
    sql_ok(db, "COMMIT");
}

static void assert_holds(sqlite3 *db, pf_idset *set, uint64_t from, uint64_t to)
{
    assert_holds_every(db, set, from, to, 1);
}

/* Runs and merges: batches become runs, runs merge by levels, a merge spans commits; every identity is found
 * in whichever run (or merge input) holds it at every point, a known one is never added twice, and a merge
 * keeps each identity exactly once. */
static void test_runs_and_merges(void **state)
{
    (void)state;
    pf_idset *set = NULL;
    pf_err e = {{0}};
    sqlite3 *db = open_set_db("runs.db", &set);
    pf_idset_stats st;
    int saw_merge_across_commits = 0, most_runs = 0;
    uint64_t n = 0;
    for (int round = 0; round < 60; round++) {
        add_batches(db, set, n, 1, 1500);
        n += 1500;
        pf_idset_get_stats(set, &st);
        saw_merge_across_commits |= st.merging > 0;
        most_runs = st.runs > most_runs ? st.runs : most_runs;
        assert_int_equal(st.pending, 0);
        if (round % 7 == 0)
            assert_holds(db, set, 0, n);
    }
    assert_holds(db, set, 0, n);
    assert_true(saw_merge_across_commits);   /* a merge larger than one step's budget went on over commits */
    assert_true(most_runs < 20);             /* merges kept the runs (probes per lookup) few: not 60 */
    assert_true(st.levels >= 3);
    assert_true(st.filtered > 0);   /* lookups above went through the Bloom filters too */
    /* a known identity is not added again, wherever it is */
    sql_ok(db, "BEGIN");
    for (uint64_t i = 0; i < n; i += 97)
        assert_int_equal(pf_idset_add(set, test_id(i), &e), 0);
    assert_int_equal(pf_idset_merge_all(set, &e), 0);
    sql_ok(db, "COMMIT");
    pf_idset_get_stats(set, &st);
    assert_int_equal(st.merging, 0);
    assert_int_equal(st.in_runs, (int64_t)n);
    int64_t rows, distinct;
    live_rows(db, &rows, &distinct);
    assert_int_equal(rows, (int64_t)n);       /* exactly once: no identity in two live runs */
    assert_int_equal(distinct, (int64_t)n);   /* none lost */
    /* the registry and tables agree; a reopened set sees the same */
    const char *why = NULL;
    assert_int_equal(pf_idset_consistent(db, "runs.db", &why, &e), 1);
    pf_idset_close(set);
    assert_int_equal(pf_idset_open(db, "runs.db", 0, &set, &e), 0);
    assert_holds(db, set, 0, n);
    /* removal (compaction) finds an identity in any run, and in the open batch */
    sql_ok(db, "BEGIN");
    assert_int_equal(pf_idset_add(set, test_id(n), &e), 1);
    assert_int_equal(pf_idset_remove(set, test_id(n), &e), 1);
    assert_int_equal(pf_idset_remove(set, test_id(5), &e), 1);
    assert_int_equal(pf_idset_remove(set, test_id(5), &e), 0);
    assert_int_equal(pf_idset_flush(set, &e), 0);
    sql_ok(db, "COMMIT");
    assert_int_equal(pf_idset_has(set, test_id(5), &e), 0);
    assert_int_equal(pf_idset_has(set, test_id(n), &e), 0);
    assert_int_equal(pf_idset_has(set, test_id(6), &e), 1);
    pf_idset_close(set);
    sqlite3_close(db);
}

static int g_fail_at, g_calls;
static int fail_handler(void *arg)
{
    (void)arg;
    return ++g_calls >= g_fail_at;   /* non-zero: SQLite interrupts the statement running now */
}

/* A transaction that fails at any point of a flush (writing the batch's run, starting, stepping or ending a
 * merge, dropping its inputs) and is rolled back leaves the set as its last commit left it: every committed
 * identity found, none of the failed batch, the registry consistent, and the next flush completes. */
static void test_failed_flush_rolls_back(void **state)
{
    (void)state;
    pf_idset *set = NULL;
    pf_err e = {{0}};
    sqlite3 *db = open_set_db("fail.db", &set);
    uint64_t n = 0;
    pf_idset_stats st0 = {0};
    while (st0.merging == 0 && n < 60 * 1500) {   /* runs of several levels and a merge under way: the flushes */
        add_batches(db, set, n, 1, 1500);         /* below fail in a merge step too, not only in the new run */
        n += 1500;
        pf_idset_get_stats(set, &st0);
    }
    assert_true(st0.merging > 0);
    int failures = 0;
    for (g_fail_at = 1;; g_fail_at += 1 + g_fail_at / 2) {
        pf_idset_stats before, after;
        pf_idset_get_stats(set, &before);
        sql_ok(db, "BEGIN");
        for (int i = 0; i < 1500; i++)
            assert_int_equal(pf_idset_add(set, test_id(n + (uint64_t)i), &e), 1);
        g_calls = 0;
        sqlite3_progress_handler(db, 50, fail_handler, NULL);   /* called every 50 SQLite instructions */
        int rc = pf_idset_flush(set, &e);
        sqlite3_progress_handler(db, 0, NULL, NULL);
        if (rc == 0) {   /* this point is past the whole flush: done */
            sql_ok(db, "COMMIT");
            n += 1500;
            break;
        }
        failures++;
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        assert_int_equal(pf_idset_forget(set, &e), 0);
        pf_idset_get_stats(set, &after);
        assert_int_equal(after.runs, before.runs);
        assert_int_equal(after.in_runs, before.in_runs);
        assert_int_equal(after.pending, 0);
        const char *why = NULL;
        assert_int_equal(pf_idset_consistent(db, "fail.db", &why, &e), 1);
        assert_holds_every(db, set, 0, n, 5);   /* and nothing of the failed batch */
        add_batches(db, set, n, 1, 1000);      /* the set goes on */
        n += 1000;
        assert_holds_every(db, set, 0, n, 5);
    }
    assert_true(failures > 8);
    sql_ok(db, "BEGIN");
    assert_int_equal(pf_idset_merge_all(set, &e), 0);
    sql_ok(db, "COMMIT");
    int64_t rows, distinct;
    live_rows(db, &rows, &distinct);
    assert_int_equal(rows, (int64_t)n);
    assert_int_equal(distinct, (int64_t)n);
    pf_idset_close(set);
    sqlite3_close(db);
}

/* kill -9 of a sink-like writer at some point of its commits (runs written, merges under way): the next open
 * finds the index consistent with the output, every committed record known, none counted twice. */
static void test_kill_mid_merge(void **state)
{
    (void)state;
    char path[300];
    int fd = open_out("k.jsonl", path, sizeof path);
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {   /* the writer: batches of 700 records, a line each, committed as the sink does */
        close(pipefd[0]);
        pf_err e = {{0}};
        int64_t from = 0;
        pf_sink_index *ix = NULL;
        if (pf_sink_index_open(path, fd, &ix, &from, &e))
            _exit(2);
        int64_t end = 0;
        for (uint64_t b = 0;; b++) {
            for (uint64_t i = 0; i < 700; i++)
                if (pf_sink_index_add(ix, test_id(b * 700 + i), &e) != 1)
                    _exit(3);
            char line[700 * 2];
            memset(line, '\n', sizeof line);
            if (write(fd, line, 700) != 700)
                _exit(4);
            end += 700;
            if (pf_sink_index_commit(ix, fd, end, &e))
                _exit(5);
            if (write(pipefd[1], "c", 1) != 1)
                _exit(6);
        }
    }
    close(pipefd[1]);
    char c;
    int commits = 0;
    while (commits < 45 && read(pipefd[0], &c, 1) == 1)
        commits++;
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    close(pipefd[0]);
    assert_int_equal(commits, 45);
    /* the output holds the records of every commit, and maybe of a batch whose index commit was cut off */
    int64_t from = -1;
    pf_err e = {{0}};
    pf_sink_index *ix = reopen(path, fd, &from);
    int64_t count = pf_sink_index_count(ix);
    assert_true(count >= 45 * 700);
    assert_int_equal(count % 700, 0);
    assert_int_equal(from, count);   /* a line per record: the checkpoint is the committed records */
    for (uint64_t i = 0; i < (uint64_t)count; i += 7)
        assert_int_equal(pf_sink_index_has(ix, test_id(i), &e), 1);
    assert_int_equal(pf_sink_index_has(ix, test_id((uint64_t)count), &e), 0);
    for (uint64_t i = 0; i < (uint64_t)count; i += 501)
        assert_int_equal(pf_sink_index_add(ix, test_id(i), &e), 0);   /* known: not added again */
    assert_int_equal(pf_sink_index_count(ix), count);
    pf_sink_index_close(ix);
    close(fd);
}

/* Reading a whole output back (the index starts over): adds do not probe the runs, the first commit merges
 * them all into one; an identity twice in the output, in two runs written apart (the open batch spills every
 * 32768), is still one record, and found. */
static void test_rebuild_bulk_load(void **state)
{
    (void)state;
    char path[300];
    int fd = open_out("bulk.jsonl", path, sizeof path);
    pf_err e = {{0}};
    int64_t from = -1;
    pf_sink_index *ix = reopen(path, fd, &from);
    assert_int_equal(from, 0);
    const uint64_t n = 100000;
    for (uint64_t i = 0; i < n; i++)
        assert_true(pf_sink_index_add(ix, test_id(i), &e) >= 0);
    for (uint64_t i = 0; i < n; i += 1000)   /* again, long after their batch was written as a run */
        assert_true(pf_sink_index_add(ix, test_id(i), &e) >= 0);
    append(fd, "{}\n");
    assert_int_equal(pf_sink_index_commit(ix, fd, 3, &e), 0);
    assert_int_equal(pf_sink_index_count(ix), (int64_t)n);
    pf_sink_index_close(ix);
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 3);
    assert_int_equal(pf_sink_index_count(ix), (int64_t)n);
    for (uint64_t i = 0; i < n; i += 3)
        assert_int_equal(pf_sink_index_add(ix, test_id(i), &e), 0);   /* no longer bulk: every run probed */
    assert_int_equal(pf_sink_index_add(ix, test_id(n), &e), 1);
    pf_sink_index_rollback(ix);
    pf_sink_index_close(ix);
    char seen[320];
    snprintf(seen, sizeof seen, "%s.seen", path);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(seen, &db), SQLITE_OK);
    assert_int_equal(sql_int(db, "SELECT count(*) FROM runs WHERE kind=0"), 1);   /* one run, each id once */
    int64_t rows, distinct;
    live_rows(db, &rows, &distinct);
    assert_int_equal(rows, (int64_t)n);
    assert_int_equal(distinct, (int64_t)n);
    sqlite3_close(db);
    close(fd);
}

/* A run table missing (the registry no longer matches): the index is rebuilt, not trusted. */
static void test_inconsistent_runs_rebuilt(void **state)
{
    (void)state;
    char path[300];
    int fd = open_out("r.jsonl", path, sizeof path);
    pf_err e = {{0}};
    int64_t from = -1;
    pf_sink_index *ix = reopen(path, fd, &from);
    assert_int_equal(pf_sink_index_add(ix, test_id(1), &e), 1);
    append(fd, "{\"r\":1}\n");
    assert_int_equal(pf_sink_index_commit(ix, fd, 8, &e), 0);
    pf_sink_index_close(ix);
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 8);
    pf_sink_index_close(ix);
    char seen[320];
    snprintf(seen, sizeof seen, "%s.seen", path);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(seen, &db), SQLITE_OK);
    int64_t t = sql_int(db, "SELECT min(t) FROM runs");
    char sql[64];
    snprintf(sql, sizeof sql, "DROP TABLE run%lld", (long long)t);
    sql_ok(db, sql);
    sqlite3_close(db);
    ix = reopen(path, fd, &from);
    assert_int_equal(from, 0);
    assert_int_equal(pf_sink_index_has(ix, test_id(1), &e), 0);
    pf_sink_index_close(ix);
    close(fd);
}

static void test_safe_names(void **state)
{
    (void)state;
    char out[256];
    pf_safe_component("..", 2, 1, 40, out);
    assert_string_equal(out, "_");
    pf_safe_component("..", 2, 1, 1, out);   /* cut to "." : still not a way up */
    assert_string_equal(out, "_");
    pf_safe_component("a/b\n.jpg", 8, 0, 40, out);
    assert_string_equal(out, "a_b__jpg");
    pf_safe_component("a.b", 3, 1, 40, out);
    assert_string_equal(out, "a.b");
    char longname[300];
    memset(longname, 'x', sizeof longname);
    pf_safe_component(longname, 300, 0, 40, out);
    assert_int_equal(strlen(out), 40);
    char other[256];
    longname[299] = 'y';
    pf_safe_component(longname, 300, 0, 40, other);
    assert_string_not_equal(out, other);   /* two long names that differ only past the cut stay apart */
    pf_safe_component("", 0, 0, 40, out);
    assert_string_equal(out, "_");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedupe_across_restarts),
        cmocka_unit_test(test_mismatch_starts_over),
        cmocka_unit_test(test_content_keys),
        cmocka_unit_test(test_superseded),
        cmocka_unit_test(test_runs_and_merges),
        cmocka_unit_test(test_failed_flush_rolls_back),
        cmocka_unit_test(test_kill_mid_merge),
        cmocka_unit_test(test_inconsistent_runs_rebuilt),
        cmocka_unit_test(test_rebuild_bulk_load),
        cmocka_unit_test(test_safe_names),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
