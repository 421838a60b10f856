/* pipeline/archive: names (shards, SHARD#MEMBER, WebDataset keys, refused names), the lister (samples and
 * their siblings, refusals, the member cap, the per-key cap, sibling limits) and the reader (by position, by
 * name, behind the cursor, a shard changed since its listing, the byte limit, a fifo named .tar), on shards
 * written with libarchive into a temporary folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <cmocka.h>

#include "base/log.h"
#include "pipeline/archive/archive.h"

#define PF_TEST_TMP_NAME "pf_archive"
#include "tests/support/test_tmp.h"

typedef struct ent {
    const char *name;
    const char *data;   /* NULL: "" */
    int type;           /* 0 regular; AE_IFLNK, AE_IFDIR, ... */
} ent;

/* Write the shard g_tmp/NAME (tar, .tar.gz or .zip by NAME) holding E[0..N). */
static const char *make_shard(const char *name, const ent *e, size_t n)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", g_tmp, name);
    struct archive *a = archive_write_new();
    assert_non_null(a);
    if (strstr(name, ".zip"))
        assert_int_equal(archive_write_set_format_zip(a), ARCHIVE_OK);
    else
        assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
    if (strstr(name, ".gz"))
        assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
    assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *en = archive_entry_new();
        const char *d = e[i].data ? e[i].data : "";
        archive_entry_set_pathname(en, e[i].name);
        archive_entry_set_filetype(en, e[i].type ? (unsigned)e[i].type : AE_IFREG);
        archive_entry_set_perm(en, 0644);
        if (e[i].type == AE_IFLNK)
            archive_entry_set_symlink(en, "/etc/passwd");
        archive_entry_set_size(en, e[i].type ? 0 : (la_int64_t)strlen(d));
        assert_int_equal(archive_write_header(a, en), ARCHIVE_OK);
        if (!e[i].type && *d)
            assert_int_equal(archive_write_data(a, d, strlen(d)), (la_ssize_t)strlen(d));
        archive_entry_free(en);
    }
    assert_int_equal(archive_write_close(a), ARCHIVE_OK);
    archive_write_free(a);
    return path;
}

/* List SHARD: every member as "name[=refusal start][+extra]" joined with ' ' into OUT; returns the list's
 * last return code (0 end, -1 error, its message in ERR). */
static int list(const char *shard, const pf_archive_limits *lim, char *out, size_t cap, pf_err *err)
{
    pf_archive_list *l;
    out[0] = '\0';
    if (pf_archive_list_open(shard, lim, &l, err))
        return -2;
    pf_archive_member m;
    int rc;
    while ((rc = pf_archive_list_next(l, &m, err)) == 1) {
        size_t n = strlen(out);
        snprintf(out + n, cap - n, "%s%s%s%.12s%s%s", n ? " " : "", m.name, m.refused ? "=" : "",
                 m.refused ? m.refused : "", m.extra ? "+" : "", m.extra ? m.extra : "");
    }
    pf_archive_list_close(l);
    return rc;
}

static void t_names(void **state)
{
    (void)state;
    assert_true(pf_archive_is_shard_name("a/b.tar"));
    assert_true(pf_archive_is_shard_name("B.TAR.GZ"));
    assert_true(pf_archive_is_shard_name("x.tzst"));
    assert_true(pf_archive_is_shard_name("x.zip"));
    assert_false(pf_archive_is_shard_name("a/.tar"));      /* a hidden file, not a shard */
    assert_false(pf_archive_is_shard_name("x.tar/y.jpg"));
    assert_false(pf_archive_is_shard_name("x.gz"));
    size_t sl = 0;
    assert_true(pf_archive_split_ref("d/a#b.tar#c#d.jpg", &sl));
    assert_int_equal(sl, strlen("d/a#b.tar"));
    assert_false(pf_archive_split_ref("a.tar#", &sl));
    assert_false(pf_archive_split_ref("a.jpg#b.jpg", &sl));
    char why[200];
    assert_int_equal(pf_archive_check_name("a/b.c/d.jpg", why, sizeof why), 0);
    assert_int_equal(pf_archive_check_name("caf\xc3\xa9..jpg", why, sizeof why), 0);   /* ".." inside a name */
    const char *bad[] = {"", "/etc/x.jpg", "../x.jpg", "a/../../x.jpg", "a/..", "a\\b.jpg", "C:x.jpg",
                         "a\x01.jpg", "caf\xe9.jpg", "\xc0\xaf.jpg" /* overlong '/' */, "\xed\xa0\x80.jpg"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(pf_archive_check_name(bad[i], why, sizeof why), -1);
    size_t kl = 0;
    const char *ext = pf_archive_wds_key("dir/000001.seg.png", &kl);
    assert_string_equal(ext, "seg.png");
    assert_int_equal(kl, strlen("dir/000001"));
    assert_null(pf_archive_wds_key("dir/._x.jpg", &kl));
    assert_null(pf_archive_wds_key("README", &kl));
    assert_true(pf_archive_is_image_name("a/b.seg.PNG"));
    assert_false(pf_archive_is_image_name("a/b.json"));
    assert_false(pf_archive_is_image_name("jpg"));
}

static void t_list_samples(void **state)
{
    (void)state;
    const ent e[] = {{"s/1.json", "{\"a\": 1}", 0}, {"s/1.jpg", "J1", 0}, {"s/1.seg.png", "P1", 0},
                     {"s/1.txt", "one", 0},       {"s/2.jpg", "J2", 0}, {"s/2.cls", "7", 0},
                     {"s", NULL, AE_IFDIR},        {"s/3.txt", "\xff", 0}, {"s/3.jpg", "J3", 0},
                     {"s/4.json", "{bad", 0},      {"s/4.jpg", "J4", 0}};
    for (int gz = 0; gz < 3; gz++) {
        const char *shard = make_shard(gz == 0 ? "w.tar" : gz == 1 ? "w.tar.gz" : "w.zip", e, sizeof e / sizeof e[0]);
        char out[2048];
        pf_err err = {{0}};
        pf_archive_limits lim = {1000, 0, 0};
        assert_int_equal(list(shard, &lim, out, sizeof out, &err), 0);
        /* the .txt that is not UTF-8 and the .json that is not JSON are left out (logged); the .cls skipped */
        assert_string_equal(out, "s/1.jpg+{\"json\":{\"a\":1},\"txt\":\"one\"} "
                                 "s/1.seg.png+{\"json\":{\"a\":1},\"txt\":\"one\"} s/2.jpg s/3.jpg s/4.jpg");
    }
}

static void t_list_refusals(void **state)
{
    (void)state;
    const ent e[] = {{"ok.jpg", "0123456789", 0}, {"../up.jpg", "x", 0}, {"link.jpg", NULL, AE_IFLNK},
                     {"big.jpg", "01234567890123456789", 0}, {"ok.jpg", "again", 0}, {"ok2.jpg", "y", 0}};
    const char *shard = make_shard("r.tar", e, sizeof e / sizeof e[0]);
    char out[2048];
    pf_err err = {{0}};
    pf_archive_limits lim = {16, 0, 0};
    assert_int_equal(list(shard, &lim, out, sizeof out, &err), 0);
    /* refusals come at once; the accepted member of a key when its sample is complete */
    assert_string_equal(out, "ok.jpg ../up.jpg='..' in the  link.jpg=a symbolic l big.jpg=member of 20 "
                             "ok.jpg=duplicate me ok2.jpg");
    /* the member cap: what came before stands, then the shard's error */
    lim.max_entries = 3;
    assert_int_equal(list(shard, &lim, out, sizeof out, &err), -1);
    assert_string_equal(out, "ok.jpg ../up.jpg='..' in the  link.jpg=a symbolic l");
    assert_non_null(strstr(err.msg, "more than 3 members"));
    lim.max_entries = 6;   /* exactly as many as the shard holds: no error */
    assert_int_equal(list(shard, &lim, out, sizeof out, &err), 0);
    /* a refused name still counts: the next member of that name is a duplicate, its own item */
    const ent e2[] = {{"x.jpg", NULL, AE_IFLNK}, {"x.jpg", "ok", 0}};
    assert_int_equal(list(make_shard("r2.tar", e2, 2), &lim, out, sizeof out, &err), 0);
    assert_string_equal(out, "x.jpg=a symbolic l x.jpg=duplicate me");
}

static void t_list_group_cap(void **state)
{
    (void)state;
    enum { N = PF_ARCHIVE_MAX_GROUP_IMAGES + 2 };
    static ent e[N];
    static char names[N][32];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "k.%d.jpg", i);
        e[i] = (ent){names[i], "x", 0};
    }
    const char *shard = make_shard("g.tar", e, N);
    pf_archive_list *l;
    pf_err err = {{0}};
    pf_archive_limits lim = {16, 0, 0};
    assert_int_equal(pf_archive_list_open(shard, &lim, &l, &err), 0);
    pf_archive_member m;
    int refused = 0, ok = 0;
    while (pf_archive_list_next(l, &m, &err) == 1) {
        refused += m.refused != NULL;
        ok += m.refused == NULL;
        if (m.refused)
            assert_non_null(strstr(m.refused, "image members under the key 'k'"));
    }
    pf_archive_list_close(l);
    assert_int_equal(ok, PF_ARCHIVE_MAX_GROUP_IMAGES);
    assert_int_equal(refused, 2);
}

static void t_list_sibling_limit(void **state)
{
    (void)state;
    const ent e[] = {{"a.jpg", "x", 0}, {"a.txt", "0123456789", 0}, {"a.json", "[1]", 0}};
    const char *shard = make_shard("sl.tar", e, 3);
    char out[512];
    pf_err err = {{0}};
    pf_archive_limits lim = {16, 0, 5};   /* siblings of at most 5 bytes */
    assert_int_equal(list(shard, &lim, out, sizeof out, &err), 0);
    assert_string_equal(out, "a.jpg+{\"json\":[1]}");
}

static void t_list_bad_shards(void **state)
{
    (void)state;
    char p[512], out[64];
    pf_err err = {{0}};
    pf_archive_limits lim = {16, 0, 0};
    snprintf(p, sizeof p, "%s/junk.tar", g_tmp);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs("this is not a tar file, not at all, but it is long enough to be looked at", f);
    fclose(f);
    assert_int_equal(list(p, &lim, out, sizeof out, &err), -2);
    assert_non_null(strstr(err.msg, "junk.tar: not a readable tar or zip shard"));
    snprintf(p, sizeof p, "%s/fifo.tar", g_tmp);
    assert_int_equal(mkfifo(p, 0600), 0);
    assert_int_equal(list(p, &lim, out, sizeof out, &err), -2);   /* refused, not waited on */
    assert_non_null(strstr(err.msg, "not a regular file"));
    snprintf(p, sizeof p, "%s/none.tar", g_tmp);
    assert_int_equal(list(p, &lim, out, sizeof out, &err), -2);
    assert_non_null(strstr(err.msg, "none.tar: cannot open the shard"));
}

static void expect_read(pf_archive_reader *r, const char *name, int64_t entry, size_t max, const char *want)
{
    uint8_t *d = NULL;
    size_t n = 0;
    pf_err err = {{0}};
    int rc = pf_archive_read_member(r, name, entry, max, &d, &n, &err);
    if (want[0] == '!') {   /* an error whose message holds want + 1 */
        if (rc != -1)
            fail_msg("reading %s (entry %lld): no error, wanted '%s'", name, (long long)entry, want + 1);
        if (!strstr(err.msg, want + 1))
            fail_msg("reading %s: '%s' does not say '%s'", name, err.msg, want + 1);
        assert_null(d);
        return;
    }
    if (rc)
        fail_msg("reading %s: %s", name, err.msg);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(d, want, n);
    free(d);
}

static void t_reader(void **state)
{
    (void)state;
    const ent e[] = {{"a.jpg", "AAAA", 0}, {"b.jpg", "BBBBBBBB", 0}, {"l.jpg", NULL, AE_IFLNK}, {"c.jpg", "C", 0},
                     {"empty.jpg", NULL, 0}};
    for (int z = 0; z < 3; z++) {
        const char *shard = make_shard(z == 0 ? "rd.tar" : z == 1 ? "rd.tar.gz" : "rd.zip", e, 5);
        pf_archive_reader *r;
        pf_err err = {{0}};
        if (pf_archive_reader_open(shard, &r, &err))
            fail_msg("%s", err.msg);
        assert_string_equal(pf_archive_reader_shard(r), shard);
        expect_read(r, "a.jpg", 0, 100, "AAAA");
        expect_read(r, "c.jpg", 3, 100, "C");
        expect_read(r, "b.jpg", 1, 100, "BBBBBBBB");      /* behind the cursor: reopened */
        expect_read(r, "b.jpg", 1, 4, "!over the limit");  /* the byte limit */
        expect_read(r, "a.jpg", -1, 100, "AAAA");          /* by name, behind the cursor */
        expect_read(r, "c.jpg", -1, 100, "C");
        expect_read(r, "a.jpg", 1, 100, "!the shard changed since it was listed");
        expect_read(r, "c.jpg", 9, 100, "!not in the shard");
        expect_read(r, "x.jpg", -1, 100, "!no member of that name");
        expect_read(r, "l.jpg", -1, 100, "!symbolic link");
        expect_read(r, "../a.jpg", -1, 100, "!path traversal");
        expect_read(r, "a.jpg", -1, 100, "AAAA");          /* still usable after refusals */
        expect_read(r, "empty.jpg", 4, 100, "");           /* 0 bytes stored (once a double free) */
        pf_archive_reader_close(r);
        uint8_t *d = NULL;
        size_t n = 0;
        assert_int_equal(pf_archive_read_one(shard, "b.jpg", 100, &d, &n, &err), 0);
        assert_int_equal(n, 8);
        free(d);
    }
}

static void t_reader_truncated(void **state)
{
    (void)state;
    static char big[20000];
    memset(big, 'x', sizeof big - 1);
    const ent e[] = {{"a.jpg", "AAAA", 0}, {"b.jpg", big, 0}};
    const char *shard = make_shard("cut.tar", e, 2);
    assert_int_equal(truncate(shard, 512 + 512 + 512 + 8000), 0);   /* inside b.jpg's bytes */
    pf_archive_reader *r;
    pf_err err = {{0}};
    assert_int_equal(pf_archive_reader_open(shard, &r, &err), 0);
    expect_read(r, "b.jpg", 1, 1 << 20, "!truncated");
    expect_read(r, "a.jpg", 0, 100, "AAAA");   /* reopened after the shard error */
    pf_archive_reader_close(r);
}

static void walk_cb(const pf_archive_member *m, const uint8_t *data, size_t n, void *arg)
{
    (void)data;
    size_t *count = arg;
    if (!m->refused && data)
        count[0] += n;
    count[1]++;
}

static void t_walk_memory(void **state)
{
    (void)state;
    const ent e[] = {{"a.jpg", "AAAA", 0}, {"a.txt", "t", 0}, {"/b.jpg", "B", 0}};
    const char *shard = make_shard("m.tar", e, 3);
    FILE *f = fopen(shard, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    size_t count[2] = {0, 0};
    pf_err err = {{0}};
    pf_archive_limits lim = {100, 0, 0};
    assert_int_equal(pf_archive_walk_memory(buf, len, &lim, walk_cb, count, &err), 2);
    assert_int_equal(count[0], 4);
    assert_int_equal(count[1], 2);
    assert_int_equal(pf_archive_walk_memory(buf, 700, &lim, walk_cb, count, &err), -1);   /* cut */
}

/* A zip whose (zip64) end record announces 2,000,000 members is refused from the record, before libarchive
 * would load its directory. */
static void t_zip_directory_cap(void **state)
{
    (void)state;
    static uint8_t z[4 + 60 + 56 + 20 + 22];
    memset(z, 0, sizeof z);
    memcpy(z, "PK\3\4", 4);
    uint8_t *r64 = z + 64, *loc = r64 + 56, *end = loc + 20;
    memcpy(r64, "PK\6\6", 4);
    uint64_t n = 2000000;
    for (int i = 0; i < 8; i++)
        r64[32 + i] = (uint8_t)(n >> (8 * i));   /* total entries */
    memcpy(loc, "PK\6\7", 4);
    loc[8] = 64;                                  /* the zip64 record's offset */
    memcpy(end, "PK\5\6", 4);
    memset(end + 10, 0xff, 2);                    /* entries: see zip64 */
    memset(end + 12, 0xff, 4);
    size_t count[2] = {0, 0};
    pf_err err = {{0}};
    pf_archive_limits lim = {100, 0, 0};
    assert_int_equal(pf_archive_walk_memory(z, sizeof z, &lim, walk_cb, count, &err), -1);
    if (!strstr(err.msg, "zip directory of 2000000 members"))
        fail_msg("%s", err.msg);
    assert_int_equal(count[1], 0);
}

int main(void)
{
    pf_log_set_level(PF_LOG_ERROR);   /* sibling problems are warnings: keep the output readable */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_names),          cmocka_unit_test(t_list_samples),       cmocka_unit_test(t_list_refusals),
        cmocka_unit_test(t_list_group_cap), cmocka_unit_test(t_list_sibling_limit), cmocka_unit_test(t_list_bad_shards),
        cmocka_unit_test(t_reader),         cmocka_unit_test(t_reader_truncated),   cmocka_unit_test(t_walk_memory),
        cmocka_unit_test(t_zip_directory_cap),
    };
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
