/* The run's files (pipeline/outfile.c): output checks, the output and job-store locks, reading an output back
 * with bounded lines; and the job store's side of reconciliation (out_end, requeue_beyond). */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "pipeline/jobstore.h"
#include "pipeline/outfile.h"

#define PF_TEST_TMP_NAME "pf_outfile"
#include "tests/support/test_tmp.h"


static void in_tmp(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", g_tmp, name);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* The refusal names the path and says why. */
static void refused(const char *path, const char *why)
{
    pf_err e = {{0}};
    assert_int_equal(pf_outfile_check(path, &e), -1);
    if (!strstr(e.msg, path) || !strstr(e.msg, why))
        fail_msg("check(%s): '%s' lacks the path or '%s'", path, e.msg, why);
}

static void test_check(void **state)
{
    (void)state;
    pf_err e = {{0}};
    char p[400];
    in_tmp(p, sizeof p, "new.jsonl");
    assert_int_equal(pf_outfile_check(p, &e), 0);             /* creatable */
    assert_int_equal(access(p, F_OK), -1);                    /* and not created */
    write_text(p, "");
    assert_int_equal(pf_outfile_check(p, &e), 0);             /* an existing regular file */
    in_tmp(p, sizeof p, "no/such/folder/out.jsonl");
    refused(p, "does not exist");
    refused(g_tmp, "a folder");
    refused("/dev/null", "character device");
    refused("/dev/full", "character device");
    in_tmp(p, sizeof p, "fifo");
    assert_int_equal(mkfifo(p, 0644), 0);
    refused(p, "pipe");
    in_tmp(p, sizeof p, "new.jsonl/x");
    refused(p, "not a folder");
    assert_int_equal(pf_outfile_check("", &e), -1);
}

static void test_same(void **state)
{
    (void)state;
    char a[400], b[400], c[400];
    in_tmp(a, sizeof a, "same.x");
    snprintf(b, sizeof b, "%s/./same.x", g_tmp);
    in_tmp(c, sizeof c, "other.x");
    assert_true(pf_outfile_same(a, b));     /* not there yet: by folder and name */
    assert_false(pf_outfile_same(a, c));
    write_text(a, "");
    assert_true(pf_outfile_same(a, b));     /* there: by inode */
    in_tmp(c, sizeof c, "link.x");
    assert_int_equal(symlink(a, c), 0);
    assert_true(pf_outfile_same(a, c));
    assert_false(pf_outfile_same(a, "/no/such/folder/same.x"));
}

static void test_output_lock(void **state)
{
    (void)state;
    pf_err e = {{0}};
    char p[400];
    in_tmp(p, sizeof p, "locked.jsonl");
    assert_int_equal(pf_outfile_probe_lock(p, &e), 0);        /* absent: nothing holds it */
    int fd = -1, fd2 = -1;
    assert_int_equal(pf_outfile_open(p, &fd, &e), 0);
    assert_true(fd >= 0);
    /* a second writer, in this process or another, is refused by name (flock is per open file) */
    assert_int_equal(pf_outfile_open(p, &fd2, &e), -1);
    assert_non_null(strstr(e.msg, p));
    assert_non_null(strstr(e.msg, "in use"));
    assert_int_equal(pf_outfile_probe_lock(p, &e), -1);
    assert_non_null(strstr(e.msg, "in use"));
    close(fd);
    assert_int_equal(pf_outfile_probe_lock(p, &e), 0);
    assert_int_equal(pf_outfile_open(p, &fd2, &e), 0);
    close(fd2);
    assert_int_equal(pf_outfile_open("/dev/null", &fd2, &e), -1);
}

static void test_db_lock(void **state)
{
    (void)state;
    pf_err e = {{0}};
    char db[400], pid[32];
    in_tmp(db, sizeof db, "job.sqlite");
    snprintf(pid, sizeof pid, "pid %d on", (int)getpid());
    pf_jobstore *js = NULL, *js2 = NULL;
    assert_int_equal(pf_jobstore_open(db, &js, &e), 0);
    assert_int_equal(pf_jobstore_open(db, &js2, &e), -1);
    assert_non_null(strstr(e.msg, db));
    assert_non_null(strstr(e.msg, pid));                       /* the holder is named */
    assert_int_equal(pf_dblock_probe(db, &e), -1);
    assert_non_null(strstr(e.msg, "in use"));
    pf_jobstore_close(js);
    assert_int_equal(pf_dblock_probe(db, &e), 0);
    assert_int_equal(pf_jobstore_open(db, &js2, &e), 0);
    pf_jobstore_close(js2);
}

/* `run` takes both locks itself and hands them to its sink and producer (pf_outfile_adopt, pf_dblock_adopt,
 * pf_jobstore_open_held): the copy keeps the lock after the caller's descriptor is closed, a second writer is
 * refused meanwhile, and a descriptor on another file is not taken for the lock. */
static void test_adopt_locks(void **state)
{
    (void)state;
    pf_err e = {{0}};
    char out[400], other[400], db[400];
    in_tmp(out, sizeof out, "adopted.jsonl");
    in_tmp(other, sizeof other, "other.jsonl");
    in_tmp(db, sizeof db, "adopted.sqlite");
    int held = -1, copy = -1, fd2 = -1, ofd = -1;
    assert_int_equal(pf_outfile_open(out, &held, &e), 0);
    assert_int_equal(pf_outfile_open(other, &ofd, &e), 0);
    assert_int_equal(pf_outfile_adopt(out, ofd, &copy, &e), -1);   /* another file's descriptor */
    assert_int_equal(copy, -1);
    assert_non_null(strstr(e.msg, out));
    assert_non_null(strstr(e.msg, "another file"));
    assert_int_equal(pf_outfile_adopt(out, -1, &copy, &e), -1);
    assert_int_equal(pf_outfile_adopt(out, held, &copy, &e), 0);
    close(held);
    assert_int_equal(pf_outfile_open(out, &fd2, &e), -1);           /* the copy still holds it */
    assert_non_null(strstr(e.msg, "in use"));
    close(copy);
    assert_int_equal(pf_outfile_open(out, &fd2, &e), 0);
    close(fd2);

    pf_jobstore *js = NULL, *js2 = NULL;
    assert_int_equal(pf_dblock_acquire(db, &held, &e), 0);
    assert_int_equal(pf_jobstore_open(db, &js2, &e), -1);           /* held: a store of its own is refused */
    assert_int_equal(pf_jobstore_open_held(db, ofd, &js, &e), -1);   /* not the lock file */
    assert_null(js);
    assert_int_equal(pf_jobstore_open_held(db, held, &js, &e), 0);
    close(held);
    assert_int_equal(pf_dblock_probe(db, &e), -1);                  /* the store's copy holds it */
    assert_int_equal(pf_jobstore_open(db, &js2, &e), -1);
    pf_jobstore_close(js);
    assert_int_equal(pf_dblock_probe(db, &e), 0);
    close(ofd);
}

typedef struct lines {
    int n;
    off_t ends[8];
    size_t lens[8];
} lines;

static int on_line(const char *line, size_t len, off_t end, void *arg)
{
    lines *l = arg;
    assert_true(len > 0 && line[len - 1] == '\n');
    if (l->n < 8) {
        l->ends[l->n] = end;
        l->lens[l->n] = len;
    }
    l->n++;
    return 0;
}

static void test_scan_and_cut(void **state)
{
    (void)state;
    pf_err e = {{0}};
    char p[400];
    in_tmp(p, sizeof p, "scan.jsonl");
    write_text(p, "{\"a\":1}\n\n{\"b\":22}\n{\"torn");
    int fd = open(p, O_RDWR);
    assert_true(fd >= 0);
    lines l = {0};
    off_t good = -1;
    /* a small max line forces the buffer to grow and lines to straddle reads */
    assert_int_equal(pf_outfile_scan(fd, p, 9, on_line, &l, &good, &e), 0);
    assert_int_equal(l.n, 3);
    assert_int_equal(l.ends[0], 8);
    assert_int_equal(l.ends[1], 9);
    assert_int_equal(l.ends[2], 18);
    assert_int_equal(good, 18);
    assert_int_equal(pf_outfile_cut(fd, p, good, &e), 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(st.st_size, 18);
    assert_int_equal(pf_outfile_cut(fd, p, good, &e), 0);    /* nothing to cut */
    close(fd);
    /* a line longer than the limit is refused with its number, not read whole */
    write_text(p, "{}\n0123456789abcdef\n");
    fd = open(p, O_RDONLY);
    memset(&l, 0, sizeof l);
    assert_int_equal(pf_outfile_scan(fd, p, 8, on_line, &l, &good, &e), -1);
    assert_non_null(strstr(e.msg, "line 2"));
    assert_non_null(strstr(e.msg, p));
    close(fd);
    /* empty file */
    write_text(p, "");
    fd = open(p, O_RDONLY);
    memset(&l, 0, sizeof l);
    assert_int_equal(pf_outfile_scan(fd, p, PF_OUT_MAX_LINE, on_line, &l, &good, &e), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(good, 0);
    close(fd);
}

/* Finished items keep where their record ends; those beyond the output's size go back to the queue. */
static void test_requeue_beyond(void **state)
{
    (void)state;
    pf_err e = {{0}};
    char db[400];
    in_tmp(db, sizeof db, "reconcile.sqlite");
    pf_jobstore *js = NULL;
    assert_int_equal(pf_jobstore_open(db, &js, &e), 0);
    int64_t id[5];
    char path[16], key[16];
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%d.jpg", i);
        snprintf(key, sizeof key, "K%d", i);
        assert_int_equal(pf_jobstore_add(js, path, 1, &id[i], &e), 0);
        assert_int_equal(pf_jobstore_lease(js, id[i], key, "inference", "w", 1e9, &e), 0);
    }
    int changed = 0;
    /* records end at 100, 200 (error record), 300; item 3 finished without an offset; item 4 still leased */
    assert_int_equal(pf_jobstore_finish_at(js, id[0], "K0", 1, NULL, 100, &changed, &e), 0);
    assert_int_equal(pf_jobstore_finish_at(js, id[1], "K1", 0, "inference: x", 200, &changed, &e), 0);
    assert_int_equal(pf_jobstore_finish_at(js, id[2], "K2", 1, NULL, 300, &changed, &e), 0);
    assert_int_equal(pf_jobstore_finish(js, id[3], "K3", 1, NULL, &changed, &e), 0);
    int64_t nd = -1, nf = -1, unplaced = -1;
    assert_int_equal(pf_jobstore_requeue_beyond(js, 300, &nd, &nf, &e), 0);   /* the whole output */
    assert_true(nd == 0 && nf == 0);
    assert_int_equal(pf_jobstore_requeue_beyond(js, 150, &nd, &nf, &e), 0);   /* cut after the first */
    assert_true(nd == 1 && nf == 1);
    int64_t c[4];
    assert_int_equal(pf_jobstore_counts(js, c, &e), 0);
    assert_true(c[PF_ITEM_QUEUED] == 2 && c[PF_ITEM_LEASED] == 1 && c[PF_ITEM_DONE] == 2 && c[PF_ITEM_FAILED] == 0);
    pf_item_row r;
    assert_int_equal(pf_jobstore_get(js, id[2], &r, &e), 0);
    assert_int_equal(r.state, PF_ITEM_QUEUED);
    pf_item_rows_free(&r, 1);
    assert_int_equal(pf_jobstore_count_unplaced(js, &unplaced, &e), 0);
    assert_true(unplaced == 1);                                               /* item 3: cannot be checked */
    int64_t placed = -1;
    assert_int_equal(pf_jobstore_count_placed(js, &placed, &e), 0);
    assert_true(placed == 1);                                                 /* item 0 */
    assert_int_equal(pf_jobstore_requeue_beyond(js, 0, &nd, &nf, &e), 0);     /* output deleted */
    assert_true(nd == 1 && nf == 0);
    assert_int_equal(pf_jobstore_counts(js, c, &e), 0);
    assert_true(c[PF_ITEM_QUEUED] == 3 && c[PF_ITEM_DONE] == 1);
    pf_jobstore_close(js);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check),          cmocka_unit_test(test_output_lock),
        cmocka_unit_test(test_db_lock),        cmocka_unit_test(test_adopt_locks),
        cmocka_unit_test(test_scan_and_cut),
        cmocka_unit_test(test_requeue_beyond), cmocka_unit_test(test_same),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
