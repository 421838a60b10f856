/* Manifests (issue 19): JSONL/CSV/TSV items with per-item prompts, settings, id and extra columns; bad lines
 * named by file and line and skipped (the rest kept); the job store's (path, task) identity, its migration from
 * stores with `path UNIQUE`, and the compaction that drops superseded error records. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <sqlite3.h>

#include "pipeline/compact.h"
#include "pipeline/jobstore.h"
#include "pipeline/manifest.h"

/* Parse TEXT as a manifest called NAME: the items' paths, prompts and meta joined into OUT ("|"-separated
 * fields, one item per line), *bad the bad lines. Returns what open returned. */
static int parse(const char *name, const char *text, size_t len, char *out, size_t cap, size_t *bad, char *last,
                 size_t last_cap)
{
    FILE *f = fmemopen((void *)text, len, "r");
    assert_non_null(f);
    pf_manifest *m = NULL;
    pf_err e = {{0}};
    int rc = pf_manifest_open_stream(f, name, "/data", PF_MANIFEST_AUTO, &m, &e);
    out[0] = '\0';
    if (rc) {
        snprintf(last, last_cap, "%s", e.msg);
        fclose(f);
        return rc;
    }
    pf_manifest_item it;
    size_t at = 0;
    int r;
    while ((r = pf_manifest_next(m, &it, &e)) == 1) {
        at += (size_t)snprintf(out + at, cap - at, "%s|", it.path);
        for (size_t i = 0; i < it.n_prompts; i++)
            at += (size_t)snprintf(out + at, cap - at, "%s;", it.prompts[i]);
        at += (size_t)snprintf(out + at, cap - at, "|%d:%d|%s\n", it.set.has_max_new_tokens, it.set.max_new_tokens,
                               it.meta ? it.meta : "-");
    }
    assert_int_equal(r, 0);
    *bad = pf_manifest_bad_lines(m);
    snprintf(last, last_cap, "%s", pf_manifest_last_error(m));
    pf_manifest_close(m);
    fclose(f);
    return 0;
}

static void test_jsonl(void **state)
{
    (void)state;
    const char *t = "{\"path\": \"a.jpg\", \"prompt\": \"caption en\", \"id\": 7, \"split\": \"val\"}\n"
                    "\n"
                    "{\"path\": \"/abs/b.jpg\", \"task\": [\"ocr\", \"answer en why?\"], \"max_new_tokens\": 5}\n"
                    "{\"path\": \"c.jpg\", \"prompt\": \"x\", \"prompt\": \"y\"}\n"   /* duplicate key */
                    "[1, 2]\n"
                    "{\"path\": 3}\n"
                    "{\"prompt\": \"no path\"}\n"
                    "{\"path\": \"d.jpg\", \"max_new_tokens\": 0}\n"
                    "{\"path\": \"e.jpg\", \"prompt\": \"p\", \"task\": \"q\"}\n"
                    "{\"path\": \"\xff\xfe.jpg\"}\n"                                   /* not UTF-8 */
                    "{\"path\": \"f.jpg\", \"id\": {\"x\": 1}}\n"
                    "{\"path\": \"g.jpg\", \"top_p\": \"0.5\", \"seed\": 3}";           /* no final newline */
    char out[4096], last[1100];
    size_t bad = 0;
    assert_int_equal(parse("m.jsonl", t, strlen(t), out, sizeof out, &bad, last, sizeof last), 0);
    assert_string_equal(out, "/data/a.jpg|caption en;|0:0|{\"id\":7,\"extra\":{\"split\":\"val\"}}\n"
                             "/abs/b.jpg|ocr;answer en why?;|1:5|-\n"
                             "/data/g.jpg||0:0|-\n");
    assert_int_equal(bad, 8);
    assert_non_null(strstr(last, "m.jsonl:11: 'id' is not a string or an integer"));
}

static void test_csv_tsv(void **state)
{
    (void)state;
    const char *c = "path,prompt,id,note,max_new_tokens\r\n"
                    "a.jpg,caption en,1,\"has, comma\",\r\n"
                    "\"b \"\"q\"\".jpg\",\"answer en what is\nthis?\",2,,7\n"   /* quotes, a newline inside */
                    "c.jpg,ocr\n"                                                /* too few fields */
                    "d.jpg,ocr,3,x,9,extra\n"                                    /* too many */
                    "e.jpg,ocr,4,\"x\"y,1\n"                                     /* text after a quote */
                    "f.jpg,ocr,5,x,many\n"                                       /* bad number */
                    "g.jpg,ocr,6,\xc3\x28,1\n"                                   /* not UTF-8 */
                    "h.jpg,ocr,7,\"never closed,1\n";
    char out[4096], last[1100];
    size_t bad = 0;
    assert_int_equal(parse("m.csv", c, strlen(c), out, sizeof out, &bad, last, sizeof last), 0);
    assert_string_equal(out, "/data/a.jpg|caption en;|0:0|{\"id\":\"1\",\"extra\":{\"note\":\"has, comma\"}}\n"
                             "/data/b \"q\".jpg|answer en what is\nthis?;|1:7|{\"id\":\"2\"}\n");
    assert_int_equal(bad, 6);
    assert_non_null(strstr(last, "m.csv:10: unterminated quoted field"));

    const char *t = "id\tpath\tprompt\n9\tx.png\tdetect cat\n\tx.png\tocr\nbroken\n";
    assert_int_equal(parse("m.tsv", t, strlen(t), out, sizeof out, &bad, last, sizeof last), 0);
    assert_string_equal(out, "/data/x.png|detect cat;|0:0|{\"id\":\"9\"}\n/data/x.png|ocr;|0:0|-\n");
    assert_int_equal(bad, 1);
    assert_non_null(strstr(last, "m.tsv:4: fewer fields"));

    /* no extension: sniffed from the first line */
    const char *j = "{\"path\": \"q.jpg\"}\n";
    assert_int_equal(parse("manifest", j, strlen(j), out, sizeof out, &bad, last, sizeof last), 0);
    assert_string_equal(out, "/data/q.jpg||0:0|-\n");
}

static void test_bad_headers(void **state)
{
    (void)state;
    char out[256], last[1100];
    size_t bad;
    const char *cases[][2] = {
        {"prompt,id\na,b\n", "no 'path' column"},
        {"path,,id\n", "an empty column name"},
        {"path,id,id\n", "a repeated column name"},
        {"", "empty manifest"},
        {"path,\"open\n", "unterminated quote"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(parse("h.csv", cases[i][0], strlen(cases[i][0]), out, sizeof out, &bad, last, sizeof last),
                         -1);
        assert_non_null(strstr(last, "h.csv"));
        if (!strstr(last, cases[i][1]))
            fail_msg("header case %zu: '%s' lacks '%s'", i, last, cases[i][1]);
    }
}

/* A line longer than the cap is refused by name, its bytes not kept; the next line is still read. */
static void test_huge_line(void **state)
{
    (void)state;
    size_t big = PF_MANIFEST_MAX_LINE + 4096;
    const char *tail = "\n{\"path\": \"after.jpg\"}\n";
    char *t = malloc(big + strlen(tail) + 1);
    assert_non_null(t);
    memcpy(t, "{\"path\": \"", 10);
    memset(t + 10, 'a', big - 10);
    memcpy(t + big, tail, strlen(tail) + 1);
    char out[256], last[1100];
    size_t bad = 0;
    assert_int_equal(parse("big.jsonl", t, strlen(t), out, sizeof out, &bad, last, sizeof last), 0);
    assert_string_equal(out, "/data/after.jpg||0:0|-\n");
    assert_int_equal(bad, 1);
    assert_non_null(strstr(last, "big.jsonl:1: longer than"));
    free(t);
}

static char g_dir[64];

/* A job store made before items had a task (path UNIQUE) opens, keeps its items and states, and takes the
 * same path with another task as a second item. */
static void test_jobstore_migration(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/pf_manifest_XXXXXX");
    assert_non_null(mkdtemp(g_dir));
    char db[128];
    snprintf(db, sizeof db, "%s/old.db", g_dir);
    sqlite3 *s = NULL;
    assert_int_equal(sqlite3_open(db, &s), SQLITE_OK);
    assert_int_equal(sqlite3_exec(s,
                                  "CREATE TABLE job(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
                                  "CREATE TABLE items(id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, "
                                  " key TEXT NOT NULL DEFAULT '', size INTEGER NOT NULL, state INTEGER NOT NULL "
                                  " DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, stage TEXT, worker TEXT, "
                                  " deadline REAL, error TEXT, updated REAL);"
                                  "INSERT INTO items(path, key, size, state) VALUES('a.jpg', 'k', 5, 2);"
                                  "INSERT INTO items(path, key, size, state) VALUES('b.jpg', '', 6, 0);",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(s);
    pf_jobstore *js = NULL;
    pf_err e = {{0}};
    assert_int_equal(pf_jobstore_open(db, &js, &e), 0);
    int64_t counts[4], id = 0;
    assert_int_equal(pf_jobstore_counts(js, counts, &e), 0);
    assert_int_equal(counts[PF_ITEM_DONE], 1);
    assert_int_equal(counts[PF_ITEM_QUEUED], 1);
    assert_int_equal(pf_jobstore_add(js, "a.jpg", 5, &id, &e), 0);
    assert_int_equal(id, -1);   /* the same (path, task) */
    assert_int_equal(pf_jobstore_add_item(js, "a.jpg", NULL, "{\"prompt\":\"ocr\"}", "{\"id\":1}", 5, &id, &e), 0);
    assert_true(id > 2);
    pf_item_row r;
    assert_int_equal(pf_jobstore_get(js, id, &r, &e), 0);
    assert_string_equal(r.task, "{\"prompt\":\"ocr\"}");
    assert_string_equal(r.meta, "{\"id\":1}");
    pf_item_rows_free(&r, 1);
    assert_int_equal(pf_jobstore_get(js, 1, &r, &e), 0);
    assert_null(r.task);
    assert_int_equal(r.state, PF_ITEM_DONE);
    pf_item_rows_free(&r, 1);
    pf_jobstore_close(js);
    /* and opens again (no second migration) */
    assert_int_equal(pf_jobstore_open(db, &js, &e), 0);
    pf_jobstore_close(js);
}

/* An output with an error record and a later success of the same path and task loses the error; offsets in
 * the job store move back by the bytes dropped. */
static void test_compact(void **state)
{
    (void)state;
    char out[128], db[128];
    snprintf(out, sizeof out, "%s/r.jsonl", g_dir);
    snprintf(db, sizeof db, "%s/r.db", g_dir);
    const char *l1 = "{\"path\": \"/x/a.png\", \"key\": \"c1-s1\", \"text\": \"a\"}\n";
    const char *l2 = "{\"path\": \"/x/b.png\", \"key\": \"c0-s1\", \"error\": {\"stage\": \"producer\"}}\n";
    const char *l3 = "{\"path\": \"/x/b.png\", \"key\": \"c0-s2\", \"error\": {\"stage\": \"producer\"}}\n";
    const char *l4 = "{\"path\": \"/x/b.png\", \"key\": \"c9-s1\", \"text\": \"b\"}\n";
    FILE *f = fopen(out, "w");
    assert_non_null(f);
    fprintf(f, "%s%s%s%s", l1, l2, l3, l4);
    fclose(f);
    pf_jobstore *js = NULL;
    pf_err e = {{0}};
    int64_t id;
    assert_int_equal(pf_jobstore_open(db, &js, &e), 0);
    assert_int_equal(pf_jobstore_add(js, "/x/a.png", 1, &id, &e), 0);
    assert_int_equal(pf_jobstore_finish_at(js, id, "", 1, NULL, (int64_t)strlen(l1), NULL, &e), 0);
    assert_int_equal(pf_jobstore_add(js, "/x/b.png", 1, &id, &e), 0);
    int64_t end4 = (int64_t)(strlen(l1) + strlen(l2) + strlen(l3) + strlen(l4));
    assert_int_equal(pf_jobstore_finish_at(js, id, "", 1, NULL, end4, NULL, &e), 0);
    pf_jobstore_close(js);
    int64_t removed = -1;
    assert_int_equal(pf_output_compact(out, db, &removed, &e), 0);
    assert_int_equal(removed, 1);   /* l2 only: l3 is another task (settings s2) */
    char buf[1024] = {0};
    f = fopen(out, "r");
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    char want[1024];
    snprintf(want, sizeof want, "%s%s%s", l1, l3, l4);
    assert_int_equal(n, strlen(want));
    assert_string_equal(buf, want);
    assert_int_equal(pf_jobstore_open(db, &js, &e), 0);
    pf_item_row r;
    assert_int_equal(pf_jobstore_get(js, id, &r, &e), 0);
    pf_item_rows_free(&r, 1);
    int64_t beyond_done = 0, beyond_failed = 0;
    assert_int_equal(pf_jobstore_requeue_beyond(js, (int64_t)strlen(want), &beyond_done, &beyond_failed, &e), 0);
    assert_int_equal(beyond_done, 0);   /* every offset lies inside the compacted file */
    pf_jobstore_close(js);
    /* nothing superseded: the file is left alone */
    assert_int_equal(pf_output_compact(out, db, &removed, &e), 0);
    assert_int_equal(removed, 0);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jsonl),          cmocka_unit_test(test_csv_tsv), cmocka_unit_test(test_bad_headers),
        cmocka_unit_test(test_huge_line),      cmocka_unit_test(test_jobstore_migration),
        cmocka_unit_test(test_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
