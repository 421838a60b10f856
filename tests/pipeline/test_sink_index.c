/* The sink's record index (pipeline/sink_index.c): dedupe across restarts without reading the output again,
 * the checkpoint never ahead of the output, a rollback that forgets the batch, an output that no longer
 * matches (cut, replaced, edited) making it start over, supersession for compaction; and the views' safe
 * names (pipeline/out_names.c). */
#include <fcntl.h>
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
    /* the same index as version 1 wrote it: rebuilt from the output */
    char seen[320];
    snprintf(seen, sizeof seen, "%s.seen", path);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(seen, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "UPDATE meta SET v=1 WHERE k='version'", NULL, NULL, NULL), SQLITE_OK);
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
        cmocka_unit_test(test_safe_names),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
