/* pipeline units: detection boxes, job store state machine and resume, scanner, key set, config files. */
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
#include <sqlite3.h>

#include "base/config_file.h"
#include "base/option.h"
#include "model/seg/boxes.h"
#include "pipeline/jobstore.h"
#include "pipeline/keyset.h"
#include "pipeline/scan.h"

#define PF_TEST_TMP_NAME "pf_units"
#include "tests/support/test_tmp.h"


/* ---------- boxes ---------- */

static void parse(const char *text, int w, int h, pf_box **b, size_t *n)
{
    pf_err e = {{0}};
    assert_int_equal(pf_boxes_parse(text, w, h, b, n, &e), 0);
}

static void test_boxes_valid(void **state)
{
    (void)state;
    pf_box *b;
    size_t n;
    parse("<loc0100><loc0200><loc0300><loc0400> cat", 2046, 1023, &b, &n);
    assert_int_equal(n, 1);
    assert_string_equal(b[0].label, "cat");
    assert_int_equal(b[0].loc[0], 100);
    assert_int_equal(b[0].loc[3], 400);
    /* y from the height, x from the width: the resize ignored the aspect ratio */
    assert_true(b[0].y0 == 100.0 && b[0].x0 == 400.0 && b[0].y1 == 300.0 && b[0].x1 == 800.0);
    pf_boxes_free(b, n);
    /* 1023 maps onto the full size */
    parse("<loc0000><loc0000><loc1023><loc1023> all", 640, 480, &b, &n);
    assert_int_equal(n, 1);
    assert_true(b[0].x1 == 640.0 && b[0].y1 == 480.0 && b[0].x0 == 0.0);
    pf_boxes_free(b, n);
}

static void test_boxes_several_and_labels(void **state)
{
    (void)state;
    pf_box *b;
    size_t n;
    parse("<loc0010><loc0020><loc0030><loc0040> traffic light ; <loc0100><loc0110><loc0500><loc0600> cat ; "
          "<loc0001><loc0002><loc0003><loc0004> hot  dog ",
          1023, 1023, &b, &n);
    assert_int_equal(n, 3);
    assert_string_equal(b[0].label, "traffic light");
    assert_string_equal(b[1].label, "cat");
    assert_string_equal(b[2].label, "hot  dog");
    assert_true(b[1].x1 == 600.0);
    pf_boxes_free(b, n);
    /* objects back to back without " ; ", and segmentation tokens after the box */
    char seg[256] = "<loc0010><loc0020><loc0030><loc0040>";
    for (int i = 0; i < 16; i++)
        strcat(seg, "<seg012>");
    strcat(seg, " person<loc0050><loc0060><loc0070><loc0080> dog");
    parse(seg, 100, 100, &b, &n);
    assert_int_equal(n, 2);
    assert_string_equal(b[0].label, "person");
    assert_string_equal(b[1].label, "dog");
    pf_boxes_free(b, n);
    /* empty label, text before the first box */
    parse("noise <loc0010><loc0020><loc0030><loc0040>", 10, 10, &b, &n);
    assert_int_equal(n, 1);
    assert_string_equal(b[0].label, "");
    pf_boxes_free(b, n);
}

static void test_boxes_broken(void **state)
{
    (void)state;
    pf_box *b;
    size_t n;
    parse("", 10, 10, &b, &n);
    assert_int_equal(n, 0);
    free(b);
    parse("a caption with no boxes", 10, 10, &b, &n);
    assert_int_equal(n, 0);
    free(b);
    /* truncated: three locs, then the output stopped */
    parse("<loc0010><loc0020><loc0030>", 10, 10, &b, &n);
    assert_int_equal(n, 0);
    free(b);
    /* truncated first object, complete second one */
    parse("<loc0010><loc0020> cat ; <loc0010><loc0020><loc0030><loc0040> dog", 10, 10, &b, &n);
    assert_int_equal(n, 1);
    assert_string_equal(b[0].label, "dog");
    pf_boxes_free(b, n);
    /* out of order corners (y1 < y0, or x1 == x0): invalid in big_vision too */
    parse("<loc0500><loc0020><loc0100><loc0040> a ; <loc0010><loc0040><loc0030><loc0040> b ; "
          "<loc0010><loc0020><loc0030><loc0040> c",
          10, 10, &b, &n);
    assert_int_equal(n, 1);
    assert_string_equal(b[0].label, "c");
    pf_boxes_free(b, n);
    /* not loc tokens: 3 or 5 digits, value over 1023, unterminated */
    parse("<loc010><loc0020><loc0030><loc0040><loc0050> x ; <loc1024><loc0001><loc0002><loc0003> y ; <loc00", 10, 10,
          &b, &n);
    assert_int_equal(n, 1);   /* <loc0020>..<loc0050>: four valid in a row after the 3-digit one */
    assert_int_equal(b[0].loc[0], 20);
    pf_boxes_free(b, n);
}

/* ---------- job store ---------- */

static void test_jobstore(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/job.sqlite", g_tmp);
    pf_jobstore *js;
    pf_err e = {{0}};
    assert_int_equal(pf_jobstore_open(path, &js, &e), 0);
    int64_t id1, id2, id3, again;
    assert_int_equal(pf_jobstore_begin(js, &e), 0);
    assert_int_equal(pf_jobstore_add(js, "a.jpg", 10, &id1, &e), 0);
    assert_int_equal(pf_jobstore_add(js, "b.jpg", 20, &id2, &e), 0);
    assert_int_equal(pf_jobstore_add(js, "c.jpg", 30, &id3, &e), 0);
    assert_int_equal(pf_jobstore_add(js, "a.jpg", 10, &again, &e), 0);
    assert_int_equal(again, -1);
    assert_int_equal(pf_jobstore_meta_set(js, "task", "{\"prompt\":\"ocr\"}", &e), 0);
    assert_int_equal(pf_jobstore_commit(js, &e), 0);
    int has = 0;
    assert_int_equal(pf_jobstore_has_path(js, "b.jpg", &has, &e), 0);
    assert_true(has);
    assert_int_equal(pf_jobstore_has_path(js, "zz.jpg", &has, &e), 0);
    assert_false(has);
    /* a -> leased -> done; b -> leased -> requeued (attempt 1) -> leased; c -> failed */
    assert_int_equal(pf_jobstore_lease(js, id1, "K1", "preprocess", "w1", 1e9, &e), 0);
    assert_int_equal(pf_jobstore_lease(js, id2, "K2", "inference", "w2", 1e9, &e), 0);
    assert_int_equal(pf_jobstore_requeue(js, id2, 1, "worker died", &e), 0);
    assert_int_equal(pf_jobstore_lease(js, id2, "K2", "preprocess", "w3", 1e9, &e), 0);
    assert_int_equal(pf_jobstore_lease(js, id3, "K3", "preprocess", "w1", 1e9, &e), 0);
    int changed = 0;
    assert_int_equal(pf_jobstore_finish(js, id1, "WRONG", 1, NULL, &changed, &e), 0);
    assert_false(changed);   /* the key must match */
    assert_int_equal(pf_jobstore_finish(js, id1, "K1", 1, NULL, &changed, &e), 0);
    assert_true(changed);
    assert_int_equal(pf_jobstore_finish(js, id3, "K3", 0, "corrupt", &changed, &e), 0);
    assert_true(changed);
    /* final states do not move */
    assert_int_equal(pf_jobstore_requeue(js, id1, 5, "late", &e), 0);
    assert_int_equal(pf_jobstore_lease(js, id3, "K3", "preprocess", "w9", 1e9, &e), 0);
    assert_int_equal(pf_jobstore_finish(js, id1, "K1", 0, "dup", &changed, &e), 0);
    assert_false(changed);
    int64_t c[4];
    assert_int_equal(pf_jobstore_counts(js, c, &e), 0);
    assert_int_equal(c[PF_ITEM_QUEUED], 0);
    assert_int_equal(c[PF_ITEM_LEASED], 1);
    assert_int_equal(c[PF_ITEM_DONE], 1);
    assert_int_equal(c[PF_ITEM_FAILED], 1);
    pf_jobstore_close(js);

    /* resume: the lease of the dead run goes back to the queue, attempts kept, finals untouched */
    assert_int_equal(pf_jobstore_open(path, &js, &e), 0);
    int64_t reset = 0;
    assert_int_equal(pf_jobstore_reset_leases(js, &reset, &e), 0);
    assert_int_equal(reset, 1);
    pf_item_row rows[8];
    size_t n = 0;
    assert_int_equal(pf_jobstore_next_queued(js, 0, 8, rows, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].id, id2);
    assert_string_equal(rows[0].path, "b.jpg");
    assert_int_equal(rows[0].attempts, 1);
    pf_item_rows_free(rows, n);
    assert_int_equal(pf_jobstore_next_queued(js, id2, 8, rows, &n, &e), 0);
    assert_int_equal(n, 0);
    char *v = NULL;
    assert_int_equal(pf_jobstore_meta_get(js, "task", &v, &e), 0);
    assert_string_equal(v, "{\"prompt\":\"ocr\"}");
    free(v);
    assert_int_equal(pf_jobstore_meta_get(js, "nothing", &v, &e), 0);
    assert_null(v);
    pf_item_row r;
    assert_int_equal(pf_jobstore_get(js, id3, &r, &e), 0);
    assert_int_equal(r.state, PF_ITEM_FAILED);
    pf_item_rows_free(&r, 1);
    pf_jobstore_close(js);
    /* not a database */
    snprintf(path, sizeof path, "%s/notdb.sqlite", g_tmp);
    FILE *f = fopen(path, "w");
    fputs("this is not sqlite, it is plain text and long enough to be a header..........", f);
    fclose(f);
    assert_int_equal(pf_jobstore_open(path, &js, &e), -1);
    assert_non_null(strstr(e.msg, path));
}

/* The counts kept in item_counts (jobstore.c, CNT_ALL) against counting the rows, after each kind of change
 * that moves items: kept counts that drift would end a job early or never. */
static int64_t sql_count(const char *path, const char *where)
{
    sqlite3 *db = NULL;
    char q[256];
    snprintf(q, sizeof q, "SELECT count(*) FROM items WHERE %s", where);
    sqlite3_stmt *s = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, q, -1, &s, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(s), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

static void sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void check_counts(pf_jobstore *js, const char *path)
{
    pf_err e = {{0}};
    assert_int_equal(pf_jobstore_commit(js, &e), 0);   /* the other connection sees committed rows only */
    int64_t c[4], placed = -1, unplaced = -1;
    assert_int_equal(pf_jobstore_counts(js, c, &e), 0);
    assert_int_equal(pf_jobstore_count_placed(js, &placed, &e), 0);
    assert_int_equal(pf_jobstore_count_unplaced(js, &unplaced, &e), 0);
    assert_int_equal(c[PF_ITEM_QUEUED], sql_count(path, "state = 0"));
    assert_int_equal(c[PF_ITEM_LEASED], sql_count(path, "state = 1"));
    assert_int_equal(c[PF_ITEM_DONE], sql_count(path, "state = 2"));
    assert_int_equal(c[PF_ITEM_FAILED], sql_count(path, "state = 3"));
    assert_int_equal(placed, sql_count(path, "state IN (2, 3) AND out_end IS NOT NULL"));
    assert_int_equal(unplaced, sql_count(path, "state IN (2, 3) AND out_end IS NULL"));
    assert_int_equal(pf_jobstore_begin(js, &e), 0);
}

static void test_jobstore_counts(void **state)
{
    (void)state;
    char path[600];
    snprintf(path, sizeof path, "%s/counts.sqlite", g_tmp);
    pf_err e = {{0}};
    pf_jobstore *js;
    assert_int_equal(pf_jobstore_open(path, &js, &e), 0);
    assert_int_equal(pf_jobstore_begin(js, &e), 0);
    int64_t id[12];
    for (int i = 0; i < 12; i++) {
        char name[32];
        snprintf(name, sizeof name, "f%02d.jpg", i);
        assert_int_equal(pf_jobstore_add(js, name, 10 + i, &id[i], &e), 0);
    }
    int64_t again;
    assert_int_equal(pf_jobstore_add(js, "f03.jpg", 13, &again, &e), 0);   /* ignored: counted once */
    check_counts(js, path);
    int changed = 0;
    for (int i = 0; i < 10; i++) {
        char key[8];
        snprintf(key, sizeof key, "K%d", i);
        assert_int_equal(pf_jobstore_lease(js, id[i], key, "preprocess", "w1", 1e9, &e), 0);
        if (i < 8)   /* 0-3 done with offsets, 4-5 failed with offsets, 6 done without, 7 failed without */
            assert_int_equal(pf_jobstore_finish_at(js, id[i], key, i < 4 || i == 6, i < 4 || i == 6 ? NULL : "bad",
                                                   i < 6 ? 100 * (i + 1) : -1, &changed, &e), 0);
    }
    assert_int_equal(pf_jobstore_finish_at(js, id[0], "K0", 0, "again", 50, &changed, &e), 0);   /* final: no-op */
    assert_false(changed);
    check_counts(js, path);
    int64_t nd = 0, nf = 0, n = 0;
    assert_int_equal(pf_jobstore_requeue_beyond(js, 450, &nd, &nf, &e), 0);   /* offsets 500, 600: f04, f05 */
    assert_int_equal(nd + nf, 2);
    check_counts(js, path);
    assert_int_equal(pf_jobstore_shift_out_end(js, 200, 50, &e), 0);   /* offsets move, counts do not */
    check_counts(js, path);
    assert_int_equal(pf_jobstore_requeue_failed(js, &n, &e), 0);
    check_counts(js, path);
    assert_int_equal(pf_jobstore_requeue(js, id[8], 1, "died", &e), 0);
    check_counts(js, path);
    assert_int_equal(pf_jobstore_commit(js, &e), 0);
    pf_jobstore_close(js);
    /* a store edited by another program (rows removed with the sqlite3 shell): the kept counts are off until
     * counted again (the producer does when they disagree with what is left, producer.c counts_right) */
    sql_exec(path, "DELETE FROM items WHERE id IN (1, 2, 11)");
    assert_int_equal(pf_jobstore_open(path, &js, &e), 0);
    assert_int_equal(pf_jobstore_begin(js, &e), 0);
    assert_int_equal(pf_jobstore_reset_leases(js, &n, &e), 0);
    int64_t c[4];
    assert_int_equal(pf_jobstore_counts(js, c, &e), 0);
    assert_int_equal(c[PF_ITEM_QUEUED] + c[PF_ITEM_LEASED] + c[PF_ITEM_DONE] + c[PF_ITEM_FAILED], 12);
    assert_int_equal(pf_jobstore_recount(js, &e), 0);
    assert_true(pf_jobstore_in_tx(js));   /* the caller's transaction goes on */
    check_counts(js, path);
    int any = 0;
    assert_int_equal(pf_jobstore_any_open(js, &any, &e), 0);
    assert_true(any);
    assert_int_equal(pf_jobstore_commit(js, &e), 0);
    pf_jobstore_close(js);
    /* a store made before the counts were kept is counted when first opened */
    sql_exec(path, "DROP TABLE item_counts; UPDATE items SET state = 2, out_end = 7 WHERE state IN (0, 1)");
    assert_int_equal(pf_jobstore_open(path, &js, &e), 0);
    assert_int_equal(pf_jobstore_begin(js, &e), 0);
    check_counts(js, path);
    assert_int_equal(pf_jobstore_any_open(js, &any, &e), 0);
    assert_false(any);
    /* changes made outside a transaction carry their counts too */
    assert_int_equal(pf_jobstore_commit(js, &e), 0);
    int64_t idz;
    assert_int_equal(pf_jobstore_add(js, "z.jpg", 1, &idz, &e), 0);
    assert_int_equal(pf_jobstore_lease(js, idz, "KZ", "preprocess", "w1", 1e9, &e), 0);
    assert_int_equal(pf_jobstore_finish_at(js, idz, "KZ", 0, "x", 900, &changed, &e), 0);
    assert_int_equal(pf_jobstore_requeue_failed(js, &n, &e), 0);
    assert_int_equal(n, 1);
    assert_int_equal(pf_jobstore_begin(js, &e), 0);
    check_counts(js, path);
    assert_int_equal(pf_jobstore_commit(js, &e), 0);
    pf_jobstore_close(js);
}

/* ---------- scanner ---------- */


static size_t scan_all(const char *const *roots, size_t nr, const char *const *inc, size_t ni, const char *const *exc,
                       size_t ne, const char *list, char out[][512], size_t max)
{
    pf_scan_params o = {roots, nr, list, inc, ni, exc, ne, 0};
    pf_scan *s;
    pf_err e = {{0}};
    assert_int_equal(pf_scan_open(&o, &s, &e), 0);
    size_t n = 0;
    const char *p;
    int r;
    while ((r = pf_scan_next(s, &p, &e)) == 1) {
        assert_true(n < max);
        snprintf(out[n++], 512, "%s", p + strlen(g_tmp));
        if (getenv("PF_DEBUG_SCAN"))
            fprintf(stderr, "scan: %s\n", p);
    }
    assert_int_equal(r, 0);
    pf_scan_close(s);
    return n;
}

static void test_scan(void **state)
{
    (void)state;
    mk("imgs");
    mk("imgs/sub");
    mk("imgs/sub/deeper");
    mk("imgs/skip");
    touch("imgs/b.jpg");
    touch("imgs/a.png");
    touch("imgs/notes.txt");
    touch("imgs/sub/c.jpg");
    touch("imgs/sub/deeper/d.JPG");
    touch("imgs/skip/e.jpg");
    char p[512], t[512];
    /* a symlink loop back to the root, a link to a sibling folder, a dangling link */
    snprintf(p, sizeof p, "%s/imgs/sub/deeper/loop", g_tmp);
    snprintf(t, sizeof t, "%s/imgs", g_tmp);
    assert_int_equal(symlink(t, p), 0);
    snprintf(p, sizeof p, "%s/imgs/dangling.jpg", g_tmp);
    assert_int_equal(symlink("/nonexistent/x.jpg", p), 0);
    char root[512];
    snprintf(root, sizeof root, "%s/imgs", g_tmp);
    const char *roots[] = {root};
    char out[32][512];
    size_t n = scan_all(roots, 1, NULL, 0, NULL, 0, NULL, out, 32);
    /* sorted, each file once despite the loop, the dangling link reported (it gets an error record) */
    const char *want[] = {"/imgs/a.png", "/imgs/b.jpg", "/imgs/dangling.jpg", "/imgs/notes.txt",
                          "/imgs/skip/e.jpg", "/imgs/sub/c.jpg", "/imgs/sub/deeper/d.JPG"};
    assert_int_equal(n, 7);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(out[i], want[i]);
    /* include/exclude globs on names and relative paths */
    const char *inc[] = {"*.jpg", "*.JPG"};
    const char *exc[] = {"skip", "dangling*"};
    n = scan_all(roots, 1, inc, 2, exc, 2, NULL, out, 32);
    assert_int_equal(n, 3);
    assert_string_equal(out[0], "/imgs/b.jpg");
    assert_string_equal(out[2], "/imgs/sub/deeper/d.JPG");
    /* a glob on the path below the root ('*' crosses '/': fnmatch without FNM_PATHNAME; any case) */
    const char *inc2[] = {"sub/*.jpg"};
    n = scan_all(roots, 1, inc2, 1, NULL, 0, NULL, out, 32);
    assert_int_equal(n, 2);
    assert_string_equal(out[0], "/imgs/sub/c.jpg");
    assert_string_equal(out[1], "/imgs/sub/deeper/d.JPG");
    /* a list file: files as listed, folders walked, blank lines skipped */
    char list[512];
    snprintf(list, sizeof list, "%s/list.txt", g_tmp);
    FILE *f = fopen(list, "w");
    fprintf(f, "%s/imgs/a.png\n\n%s/imgs/skip\r\n", g_tmp, g_tmp);
    fclose(f);
    n = scan_all(NULL, 0, NULL, 0, NULL, 0, list, out, 32);
    assert_int_equal(n, 2);
    assert_string_equal(out[0], "/imgs/a.png");
    assert_string_equal(out[1], "/imgs/skip/e.jpg");
    /* a missing root is an error */
    const char *missing[] = {"/nonexistent/folder"};
    pf_scan_params o = {missing, 1, NULL, NULL, 0, NULL, 0, 0};
    pf_scan *s;
    pf_err e = {{0}};
    assert_int_equal(pf_scan_open(&o, &s, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/folder"));
}

/* Globs match case-insensitively (a camera folder's .JPG, a .Webp), and the scan counts what each filter
 * skipped for its summary line. */
static void test_scan_case_and_counts(void **state)
{
    (void)state;
    mk("cam");
    mk("cam/Thumbs");
    mk("cam/raw");
    const char *files[] = {"cam/IMG_0001.JPG", "cam/img_0002.jpg", "cam/b.JPEG", "cam/c.Png", "cam/d.webp",
                           "cam/e.WEBP", "cam/f.tif", "cam/g.TIFF", "cam/h.gif", "cam/i.BMP", "cam/notes.TXT",
                           "cam/clip.MOV", "cam/Thumbs/t1.jpg", "cam/Thumbs/t2.jpg", "cam/raw/r.jpg",
                           "cam/tmp_x.JPG", "cam/TMP_y.jpg"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        touch(files[i]);
    char root[512];
    snprintf(root, sizeof root, "%s/cam", g_tmp);
    const char *roots[] = {root};
    /* the shipped globs (examples/producer.conf, deploy/) in lower case; excludes in another case */
    const char *inc[] = {"*.jpg", "*.jpeg", "*.png", "*.webp", "*.tif", "*.tiff", "*.gif", "*.bmp"};
    const char *exc[] = {"thumbs", "tmp_*", "RAW/*"};
    pf_scan_params o = {roots, 1, NULL, inc, 8, exc, 3, 0};
    pf_scan *s;
    pf_err e = {{0}};
    assert_int_equal(pf_scan_open(&o, &s, &e), 0);
    const char *want[] = {"/cam/IMG_0001.JPG", "/cam/b.JPEG", "/cam/c.Png", "/cam/d.webp", "/cam/e.WEBP",
                          "/cam/f.tif", "/cam/g.TIFF", "/cam/h.gif", "/cam/i.BMP", "/cam/img_0002.jpg"};
    size_t n = 0;
    const char *p;
    int r;
    while ((r = pf_scan_next(s, &p, &e)) == 1) {
        assert_true(n < sizeof want / sizeof *want);
        assert_string_equal(p + strlen(g_tmp), want[n]);
        n++;
    }
    assert_int_equal(r, 0);
    assert_int_equal(n, sizeof want / sizeof *want);
    assert_int_equal(pf_scan_found(s), n);
    assert_int_equal(pf_scan_not_included(s), 2);      /* notes.TXT, clip.MOV */
    assert_int_equal(pf_scan_excluded_dirs(s, 0), 1);  /* Thumbs, once: t1/t2 never listed */
    assert_int_equal(pf_scan_excluded_files(s, 0), 0);
    assert_int_equal(pf_scan_excluded_files(s, 1), 2); /* tmp_x.JPG, TMP_y.jpg */
    assert_int_equal(pf_scan_excluded_dirs(s, 1), 0);
    assert_int_equal(pf_scan_excluded_files(s, 2), 1); /* raw/r.jpg by its path below the root */
    assert_int_equal(pf_scan_excluded_files(s, 99), 0);
    char line[512];
    pf_scan_summary(s, line, sizeof line);
    assert_string_equal(line, "10 files taken; skipped: 2 matching no include glob (*.jpg *.jpeg *.png *.webp "
                              "*.tif *.tiff *.gif *.bmp), 1 folder by exclude 'thumbs', 2 files by "
                              "exclude 'tmp_*', 1 file by exclude 'RAW/*' (globs match case-insensitively)");
    /* a short buffer truncates, terminated */
    char tiny[16];
    pf_scan_summary(s, tiny, sizeof tiny);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
    assert_int_equal(strncmp(tiny, line, sizeof tiny - 1), 0);
    pf_scan_close(s);
    /* no filters: said so */
    pf_scan_params all = {roots, 1, NULL, NULL, 0, NULL, 0, 0};
    assert_int_equal(pf_scan_open(&all, &s, &e), 0);
    while ((r = pf_scan_next(s, &p, &e)) == 1)
        ;
    assert_int_equal(r, 0);
    pf_scan_summary(s, line, sizeof line);
    assert_string_equal(line, "17 files taken; no include/exclude globs");
    pf_scan_close(s);
}

/* ---------- key set, config ---------- */

static void test_keyset(void **state)
{
    (void)state;
    pf_keyset s;
    pf_keyset_init(&s);
    for (uint64_t i = 0; i < 5000; i++)
        assert_int_equal(pf_keyset_add(&s, i * 7919, i), 1);
    assert_int_equal(pf_keyset_add(&s, 0, 0), 0);   /* i = 0 added (0, 0) already */
    for (uint64_t i = 0; i < 5000; i++) {
        assert_true(pf_keyset_has(&s, i * 7919, i));
        assert_false(pf_keyset_has(&s, i * 7919, i + 1));
        assert_int_equal(pf_keyset_add(&s, i * 7919, i), 0);
    }
    assert_int_equal(pf_keyset_size(&s), 5000);
    pf_keyset_free(&s);
}

/* remove (backward shift: every key left stays findable), next (each key once), clear */
static void test_keyset_remove_next(void **state)
{
    (void)state;
    pf_keyset s;
    pf_keyset_init(&s);
    for (uint64_t i = 0; i < 3000; i++)
        assert_int_equal(pf_keyset_add(&s, i % 64, i / 64), 1);   /* (0, 0) among them; many collisions */
    for (uint64_t i = 0; i < 3000; i += 3)
        assert_int_equal(pf_keyset_remove(&s, i % 64, i / 64), 1);
    assert_int_equal(pf_keyset_remove(&s, 0, 0), 0);   /* i = 0 was removed */
    assert_int_equal(pf_keyset_remove(&s, 99, 99), 0);
    assert_int_equal(pf_keyset_size(&s), 2000);
    for (uint64_t i = 0; i < 3000; i++)
        assert_int_equal(pf_keyset_has(&s, i % 64, i / 64), i % 3 != 0);
    static unsigned char seen[3000];
    size_t n = 0;
    uint64_t a, b;
    for (size_t pos = 0; pf_keyset_next(&s, &pos, &a, &b); n++) {
        uint64_t i = b * 64 + a;
        assert_true(i < 3000 && i % 3 != 0 && !seen[i]);
        seen[i] = 1;
    }
    assert_int_equal(n, 2000);
    pf_keyset_clear(&s, 1u << 20);
    assert_int_equal(pf_keyset_size(&s), 0);
    assert_false(pf_keyset_has(&s, 1, 0));
    assert_int_equal(pf_keyset_add(&s, 1, 0), 1);
    pf_keyset_clear(&s, 0);   /* memory given back */
    assert_null(s.slots);
    pf_keyset_free(&s);
}

static void test_config(void **state)
{
    (void)state;
    char path[300];
    snprintf(path, sizeof path, "%s/x.conf", g_tmp);
    FILE *f = fopen(path, "w");
    fprintf(f, "# comment\nbind = tcp://*:5555\n  include = \"*.jpg\"\nexit-when-done\n\n");
    fclose(f);
    char a0[] = "producer", a1[] = "--config", a3[] = "--include=*.png", a4[] = "dir";
    char *argv[] = {a0, a1, path, a3, a4, NULL};
    int argc2;
    char **argv2;
    pf_err e = {{0}};
    assert_int_equal(pf_config_expand_argv(5, argv, &argc2, &argv2, &e), 0);
    assert_int_equal(argc2, 6);
    assert_string_equal(argv2[0], "producer");
    assert_string_equal(argv2[1], "--bind=tcp://*:5555");
    assert_string_equal(argv2[2], "--include=*.jpg");
    assert_string_equal(argv2[3], "--exit-when-done");
    assert_string_equal(argv2[4], "--include=*.png");
    assert_string_equal(argv2[5], "dir");
    assert_null(argv2[6]);
    pf_config_free_argv(argc2, argv2);
    f = fopen(path, "w");
    fprintf(f, "bad line here = 1\n");
    fclose(f);
    assert_int_equal(pf_config_expand_argv(5, argv, &argc2, &argv2, &e), -1);
    assert_non_null(strstr(e.msg, "line 1"));
    long long iv;
    double dv;
    assert_int_equal(pf_parse_int("12", 0, 20, &iv), 0);
    assert_int_equal(pf_parse_int("12x", 0, 20, &iv), -1);
    assert_int_equal(pf_parse_int("21", 0, 20, &iv), -1);
    assert_int_equal(pf_parse_double("0.5", 0, 1, &dv), 0);
    assert_int_equal(pf_parse_double("nan", 0, 1, &dv), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_boxes_valid), cmocka_unit_test(test_boxes_several_and_labels),
        cmocka_unit_test(test_boxes_broken), cmocka_unit_test(test_jobstore), cmocka_unit_test(test_jobstore_counts),
        cmocka_unit_test(test_scan),         cmocka_unit_test(test_scan_case_and_counts),         cmocka_unit_test(test_keyset), cmocka_unit_test(test_keyset_remove_next),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
