/* `paliflow preprocess-image` end to end: goldens at every size (and --autorotate) bit-exact in the
 * output file keyed by the FILE argument, every hostile file alone and mixed into a batch (one stderr
 * line naming it, no tensor, exit 1, the good files still written), usage errors, options.
 * usage: test_image_cli [golden] [PALIFLOW]: "golden" runs the checks that read the golden images
 * (tests/golden_split.h); PALIFLOW defaults to the paliflow this build made. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../golden_split.h"
#include "base/file.h"
#include "image_test_util.h"
#include "model/io/safetensors.h"
#include "image/image.h"

extern char **environ;
static const char *g_prog;
static char g_tmp[256];
static char g_out[300], g_errf[300];

/* Run paliflow with args (NULL-terminated), stdout/stderr to files; returns the exit status. */
static int run(const char *const *args, char **err_text)
{
    const char *argv[512];
    int n = 0;
    argv[n++] = g_prog;
    for (int i = 0; args[i] && n < 511; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, g_errf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, g_prog, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    assert_int_equal(rc, 0);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (err_text) {
        size_t len;
        pf_err e;
        if (pf_read_file(g_errf, 1 << 20, err_text, &len, &e))
            *err_text = strdup("");
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int count_lines_with(const char *text, const char *needle, int *total)
{
    int hits = 0, lines = 0;
    const char *p = text;
    while (*p) {
        const char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len) {
            lines++;
            char *line = strndup(p, len);
            if (strstr(line, needle))
                hits++;
            free(line);
        }
        p += len + (e ? 1 : 0);
    }
    if (total)
        *total = lines;
    return hits;
}

/* Tensor `key` of OUT equals the normalised golden. */
static void check_tensor(const pf_st_file *f, const char *key, const golden_case *c)
{
    const pf_st_tensor *t = pf_st_find(f, key);
    if (!t)
        fail_msg("no tensor for %s (S=%d)", key, c->size);
    assert_int_equal(t->dtype, PF_DT_F32);
    assert_int_equal(t->ndim, 3);
    assert_int_equal(t->shape[0], 3);
    assert_int_equal(t->shape[1], c->size);
    assert_int_equal(t->shape[2], c->size);
    uint8_t *want = golden_expected(c);
    assert_non_null(want);
    size_t plane = (size_t)c->size * c->size;
    float *got = malloc(plane * 3 * sizeof *got);
    pf_err err;
    assert_int_equal(pf_st_read_f32(t, got, &err), 0);
    size_t bad = 0;
    for (size_t ch = 0; ch < 3; ch++)
        for (size_t i = 0; i < plane; i++) {
            float w = pf_img_pixel_value(want[3 * i + ch]);
            if (memcmp(&w, &got[ch * plane + i], sizeof w) != 0)
                bad++;
        }
    if (bad)
        fail_msg("%s S=%d: %zu of %zu values differ", key, c->size, bad, plane * 3);
    free(got);
    free(want);
}

static void test_goldens_cli(void **state)
{
    (void)state;
    golden_case *cs;
    size_t n = golden_cases(&cs);
    assert_true(n > 0);
    assert_int_equal(chdir(IMG_DIR), 0); /* FILE arguments are bare names: they must be the keys */
    static const int sizes[] = {224, 448, 896};
    for (int ar = 0; ar < 2; ar++)
        for (size_t s = 0; s < 3; s++) {
            const char *args[256];
            int k = 0;
            char size[16];
            snprintf(size, sizeof size, "%d", sizes[s]);
            args[k++] = "preprocess-image";
            args[k++] = "--size";
            args[k++] = size;
            args[k++] = "--out";
            args[k++] = g_out;
            if (ar)
                args[k++] = "--autorotate";
            int files = 0;
            for (size_t i = 0; i < n && k < 250; i++)
                if (cs[i].size == sizes[s] && cs[i].autorotate == ar) {
                    args[k++] = cs[i].name;
                    files++;
                }
            args[k] = NULL;
            char *errs;
            int rc = run(args, &errs);
            if (rc != 0)
                fail_msg("exit %d for S=%d autorotate=%d: %s", rc, sizes[s], ar, errs);
            free(errs);
            pf_st_file f;
            pf_err err;
            if (pf_st_open(g_out, &f, &err))
                fail_msg("%s", err.msg);
            assert_int_equal((int)f.count, files);
            for (size_t i = 0; i < n; i++)
                if (cs[i].size == sizes[s] && cs[i].autorotate == ar)
                    check_tensor(&f, cs[i].name, &cs[i]);
            pf_st_close(&f);
            printf("S=%d autorotate=%d: %d files exact through the CLI\n", sizes[s], ar, files);
        }
    free(cs);
}

static void test_bad_alone_and_mixed(void **state)
{
    (void)state;
    assert_int_equal(chdir(IMG_DIR), 0);
    const char *loop = make_symlink_loop();
    assert_non_null(loop);
    char names[32][256];
    size_t nb = 0;
    for (size_t i = 0; i < g_bad_count; i++)
        snprintf(names[nb++], sizeof names[0], "bad/%s", g_bad_cases[i].name);
    snprintf(names[nb++], sizeof names[0], "%s", loop);
    /* alone */
    for (size_t i = 0; i < nb; i++) {
        const char *args[] = {"preprocess-image", "--size", "224", "--out", g_out, names[i], NULL};
        char *errs;
        int rc = run(args, &errs);
        int lines, hits = count_lines_with(errs, names[i], &lines);
        if (rc != 1 || lines != 1 || hits != 1)
            fail_msg("%s alone: exit %d, %d stderr lines (%d naming it): %s", names[i], rc, lines, hits, errs);
        const char *kind = i < g_bad_count ? pf_img_errkind_name(g_bad_cases[i].kind) : "not-a-file";
        if (!strstr(errs, kind))
            fail_msg("%s: category %s missing from: %s", names[i], kind, errs);
        free(errs);
        pf_st_file f;
        pf_err err;
        assert_int_equal(pf_st_open(g_out, &f, &err), 0);
        assert_int_equal((int)f.count, 0);
        pf_st_close(&f);
    }
    /* mixed: good files between the bad ones */
    static const char *const good[] = {"chelsea.png", "receipt_2000x150.png", "coffee_single.gif", "color_24.bmp"};
    const char *args[64];
    int k = 0;
    args[k++] = "preprocess-image";
    args[k++] = "--out";
    args[k++] = g_out;
    args[k++] = "--size";
    args[k++] = "448";
    for (size_t i = 0; i < nb; i++) {
        if (i < 4)
            args[k++] = good[i];
        args[k++] = names[i];
    }
    args[k] = NULL;
    char *errs;
    int rc = run(args, &errs);
    int lines;
    count_lines_with(errs, "", &lines);
    assert_int_equal(rc, 1);
    if (lines != (int)nb)
        fail_msg("mixed batch: %d stderr lines for %zu bad files: %s", lines, nb, errs);
    for (size_t i = 0; i < nb; i++)
        if (count_lines_with(errs, names[i], NULL) != 1)
            fail_msg("mixed batch: %s not named exactly once: %s", names[i], errs);
    free(errs);
    pf_st_file f;
    pf_err err;
    assert_int_equal(pf_st_open(g_out, &f, &err), 0);
    assert_int_equal((int)f.count, 4);
    for (int i = 0; i < 4; i++) {
        golden_case c = {.size = 448};
        snprintf(c.name, sizeof c.name, "%s", good[i]);
        check_tensor(&f, good[i], &c);
    }
    pf_st_close(&f);
    remove_symlink_loop(loop);
}

/* A committed image: usage errors need no golden data (they are refused before any file is read). */
#define EXAMPLE_IMAGE PF_SOURCE_DIR "/examples/images/chelsea.jpg"

static void test_usage(void **state)
{
    (void)state;
    const char *none[] = {"preprocess-image", NULL};
    assert_int_equal(run(none, NULL), 2);
    const char *help[] = {"preprocess-image", "--help", NULL};
    assert_int_equal(run(help, NULL), 0);
    const char *nosize[] = {"preprocess-image", "--out", g_out, EXAMPLE_IMAGE, NULL};
    assert_int_equal(run(nosize, NULL), 2);
    const char *zero[] = {"preprocess-image", "--size", "0", "--out", g_out, EXAMPLE_IMAGE, NULL};
    assert_int_equal(run(zero, NULL), 2);
    const char *junk[] = {"preprocess-image", "--size", "22x", "--out", g_out, EXAMPLE_IMAGE, NULL};
    assert_int_equal(run(junk, NULL), 2);
    const char *noout[] = {"preprocess-image", "--size", "224", EXAMPLE_IMAGE, NULL};
    assert_int_equal(run(noout, NULL), 2);
    const char *nofile[] = {"preprocess-image", "--size", "224", "--out", g_out, NULL};
    assert_int_equal(run(nofile, NULL), 2);
    const char *bogus[] = {"preprocess-image", "--size", "224", "--bogus", "--out", g_out, "x.png", NULL};
    assert_int_equal(run(bogus, NULL), 2);
    const char *badout[] = {"preprocess-image", "--size", "16", "--out", "/nonexistent/dir/o.st",
                            EXAMPLE_IMAGE, NULL};
    assert_int_equal(run(badout, NULL), 2);
}

static void test_options(void **state)
{
    (void)state;
    /* --max-pixels: receipt has 300000 pixels */
    const char *lim[] = {"preprocess-image", "--size", "32", "--max-pixels", "1000", "--out", g_out,
                         IMG_DIR "/receipt_2000x150.png", IMG_DIR "/pixel_1x1.png", NULL};
    char *errs;
    assert_int_equal(run(lim, &errs), 1);
    assert_non_null(strstr(errs, "too-many-pixels"));
    assert_non_null(strstr(errs, "receipt_2000x150.png"));
    free(errs);
    /* the same file twice: one tensor; threads give the same bytes */
    const char *dup[] = {"preprocess-image", "--size", "40", "-j", "3", "--out", g_out, IMG_DIR "/tiny_3x5.png",
                         IMG_DIR "/chelsea.png", IMG_DIR "/tiny_3x5.png", IMG_DIR "/hubble_3000x2000.jpg", NULL};
    assert_int_equal(run(dup, NULL), 0);
    pf_st_file f;
    pf_err err;
    assert_int_equal(pf_st_open(g_out, &f, &err), 0);
    assert_int_equal((int)f.count, 3);
    pf_st_close(&f);
}

int main(int argc, char **argv)
{
    int golden = pf_test_golden_group(&argc, &argv);
    g_prog = argc > 1 ? argv[1] : PF_PALIFLOW_BIN;
    if (g_prog[0] != '/') {
        static char abs[1024];
        if (!getcwd(abs, sizeof abs - strlen(g_prog) - 2))
            return 2;
        strcat(abs, "/");
        strcat(abs, g_prog);
        g_prog = abs;
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/pf_img_cli_XXXXXX");
    if (!mkdtemp(g_tmp))
        return 2;
    snprintf(g_out, sizeof g_out, "%s/out.safetensors", g_tmp);
    snprintf(g_errf, sizeof g_errf, "%s/stderr.txt", g_tmp);
    pf_err err;
    if (pf_img_init(&err))
        return 2;
    const struct CMUnitTest core[] = {
        cmocka_unit_test(test_usage),
    };
    const struct CMUnitTest with_golden[] = {
        cmocka_unit_test(test_goldens_cli),
        cmocka_unit_test(test_bad_alone_and_mixed),
        cmocka_unit_test(test_options),
    };
    int rc = golden ? cmocka_run_group_tests_name("golden", with_golden, NULL, NULL)
                    : cmocka_run_group_tests_name("core", core, NULL, NULL);
    unlink(g_out);
    unlink(g_errf);
    rmdir(g_tmp);
    return rc;
}
