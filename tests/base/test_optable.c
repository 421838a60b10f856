/* Tests of base/optable: one table drives parsing (every row type, ranges, errors), --help (defaults from the
 * init struct, ranges, 80 columns) and reloads; --config lines parse like the command line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config_file.h"
#include "base/optable.h"

typedef struct sub {
    double timeout;
    size_t bytes;
} sub;

typedef struct cfg {
    const char *name;
    int count, flag, keep, mode;
    uint64_t seed;
    double ms_as_s;
    sub sub;
    pf_opt_list tags;
    int hooked, funced;
} cfg;

static void cfg_init(void *obj)
{
    *(cfg *)obj = (cfg){.count = 3, .keep = 1, .mode = -1, .ms_as_s = 0.05, .sub = {.timeout = 10, .bytes = 2u << 20}};
}

static const pf_opt_choice g_modes[] = {{"auto", -1}, {"on", 1}, {"off", 0}, {NULL, 0}};

static int double_count(const pf_opt *opt, void *field, const char *val, pf_err *err)
{
    (void)opt, (void)val, (void)err;
    int *count = field;
    *count *= 2;   /* a hook runs after the store */
    return 0;
}

static int func_opt(const pf_opt *opt, void *field, const char *val, pf_err *err)
{
    if (strcmp(val, "yes"))
        return pf_errf(err, "--%s: want yes", opt->name);
    *(int *)field = 1;
    return 0;
}

#define T cfg
static const pf_opt g_rows[] = {
    {"name", 'n', PF_OPT_STR, offsetof(T, name), .flags = PF_OPT_NONEMPTY, .arg = "NAME", .help = "a name"},
    PF_OPT_ROW_INT("count", T, count, 1, 1000, PF_OPT_RELOAD, "N", "how many"),
    PF_OPT_ROW_FLAG("flag", T, flag, 0, "set a flag"),
    PF_OPT_ROW_FLAG("no-keep", T, keep, PF_OPT_CLEAR, "clear keep"),
    PF_OPT_ROW_ENUM("mode", T, mode, g_modes, PF_OPT_RELOAD, "MODE", "the mode"),
    PF_OPT_ROW_U64("seed", T, seed, 0, INT64_MAX, 0, "N", "a seed"),
    {"flush-ms", 0, PF_OPT_DOUBLE, offsetof(T, ms_as_s), 0, 1e7, 0.001, .flags = PF_OPT_RELOAD, .arg = "MS",
     .help = "milliseconds, stored as seconds"},
    PF_OPT_ROW_HEADING("nested:"),
    PF_OPT_ROW_DOUBLE("timeout", T, sub.timeout, 0.05, 100, 0, "S", "a nested double"),
    {"mb", 0, PF_OPT_SIZE, offsetof(T, sub.bytes), 1, 4096, 1048576, .arg = "N", .help = "megabytes as bytes"},
    PF_OPT_ROW_LIST("tag", T, tags, "TAG", "repeatable"),
    {"hooked", 0, PF_OPT_INT, offsetof(T, hooked), 0, 100, .fn = double_count, .arg = "N", .help = "doubled"},
    PF_OPT_ROW_FUNC("func", T, funced, func_opt, 0, "X", "yes"),
    {"secret", 0, PF_OPT_FLAG, offsetof(T, flag), .flags = PF_OPT_HIDDEN, .help = "not in --help"},
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {
    .name = "test",
    .synopsis = "usage: paliflow test [OPTIONS] ARG...\n\nA long paragraph of prose that is much wider than eighty "
                "columns on one line, so that --help has to wrap it at a space.\n\n",
    .opts = g_rows,
    .size = sizeof(cfg),
    .init = cfg_init,
    .operands = 1,
};

/* Parse a NULL-terminated argv into *C (initialised first); the status, with ERR's message. */
static int parse(const char **args, cfg *c, int *first, pf_err *err)
{
    int argc = 0;
    while (args[argc])
        argc++;
    cfg_init(c);
    return pf_opt_parse_args(&g_cmd, c, argc, (char **)args, first, err);
}

static void test_every_type(void **state)
{
    (void)state;
    const char *args[] = {"test", "-n", "x", "--count=7", "--flag", "--no-keep", "--mode", "on", "--seed",
                          "9223372036854775807", "--flush-ms", "20", "--timeout", "0.5", "--mb", "3", "--tag", "a",
                          "op1", "--tag", "b", "--hooked", "4", "--func", "yes", "op2", NULL};
    cfg c;
    pf_err err = {{0}};
    int first;
    assert_int_equal(parse(args, &c, &first, &err), 0);
    assert_string_equal(c.name, "x");
    assert_int_equal(c.count, 7);
    assert_int_equal(c.flag, 1);
    assert_int_equal(c.keep, 0);
    assert_int_equal(c.mode, 1);
    assert_true(c.seed == (uint64_t)INT64_MAX);
    assert_true(c.ms_as_s > 0.0199 && c.ms_as_s < 0.0201);
    assert_true(c.sub.timeout == 0.5);
    assert_int_equal(c.sub.bytes, 3u << 20);
    assert_int_equal(c.tags.n, 2);
    assert_string_equal(c.tags.v[0], "a");
    assert_string_equal(c.tags.v[1], "b");
    assert_int_equal(c.hooked, 8);
    assert_int_equal(c.funced, 1);
    /* operands are permuted to the end, in order */
    assert_int_equal(first, 24);
    assert_string_equal(args[first], "op1");
    assert_string_equal(args[first + 1], "op2");
    pf_opt_list_keep_last(&c.tags, 1);
    assert_int_equal(c.tags.n, 1);
    assert_string_equal(c.tags.v[0], "b");
    pf_opt_free(&g_cmd, &c);
    assert_null(c.tags.v);
}

/* ARGS must fail with a message containing WANT. */
static void refused(const char **args, const char *want)
{
    cfg c;
    pf_err err = {{0}};
    assert_int_equal(parse(args, &c, NULL, &err), -1);
    if (!strstr(err.msg, want))
        fail_msg("message '%s' lacks '%s'", err.msg, want);
    pf_opt_free(&g_cmd, &c);
}

static void test_errors(void **state)
{
    (void)state;
    refused((const char *[]){"test", "--count", "0", NULL}, "--count: want an integer in 1..1000, got '0'");
    refused((const char *[]){"test", "--count", "12x", NULL}, "--count: want an integer");
    refused((const char *[]){"test", "--seed", "-1", NULL}, "--seed: want an integer >= 0, got '-1'");
    refused((const char *[]){"test", "--seed", "9223372036854775808", NULL}, "--seed");
    refused((const char *[]){"test", "--timeout", "nan", NULL}, "--timeout: want a number in 0.05..100");
    refused((const char *[]){"test", "--timeout", "1e999", NULL}, "--timeout");
    refused((const char *[]){"test", "--mode", "maybe", NULL}, "--mode: want auto|on|off, got 'maybe'");
    refused((const char *[]){"test", "--name", "", NULL}, "--name: needs a value");
    refused((const char *[]){"test", "--tag=", NULL}, "--tag: needs a value");
    refused((const char *[]){"test", "--func", "no", NULL}, "--func: want yes");
    refused((const char *[]){"test", "--bogus", NULL}, "unknown or ambiguous option '--bogus'");
    refused((const char *[]){"test", "-q", NULL}, "unknown option '-q'");
    /* a file whose name starts with '-' reads as options: the message says how to name it */
    char dir[] = "/tmp/pf_optable_XXXXXX", cwd[4096];
    assert_non_null(mkdtemp(dir));
    assert_non_null(getcwd(cwd, sizeof cwd));
    assert_int_equal(chdir(dir), 0);
    int fd = open("-leading-dash.png", O_CREAT | O_WRONLY, 0644);
    assert_true(fd >= 0);
    close(fd);
    refused((const char *[]){"test", "-leading-dash.png", NULL},
            "unknown option '-l' ('-leading-dash.png' is a file: write ./-leading-dash.png, or put -- before the "
            "file names)");
    refused((const char *[]){"test", "-qz", NULL}, "unknown option '-q'");   /* no such file: no hint */
    assert_int_equal(unlink("-leading-dash.png"), 0);
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rmdir(dir), 0);
    refused((const char *[]){"test", "--count", NULL}, "needs a value");
    refused((const char *[]){"test", "--config=x", NULL}, "--config inside a config file");
    refused((const char *[]){"test", "--log-level", "loud", NULL}, "--log-level: want error|warn|info|debug");
    cfg c;
    pf_err err = {{0}};
    assert_int_equal(parse((const char *[]){"test", "--count", "5", "--help", "--count", "0", NULL}, &c, NULL, &err), 1);
    assert_int_equal(parse((const char *[]){"test", "-h", NULL}, &c, NULL, &err), 1);
}

static void test_no_operands(void **state)
{
    (void)state;
    pf_optcmd cmd = g_cmd;
    cmd.operands = 0;
    cfg c;
    cfg_init(&c);
    pf_err err = {{0}};
    const char *args[] = {"test", "--count", "2", "stray", NULL};
    assert_int_equal(pf_opt_parse_args(&cmd, &c, 4, (char **)args, NULL, &err), -1);
    assert_string_equal(err.msg, "unexpected argument 'stray'");
}

static char *help_text(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    pf_opt_help(&g_cmd, f);
    fclose(f);
    return buf;
}

static void test_help(void **state)
{
    (void)state;
    char *h = help_text();
    /* every line inside 80 columns, the synopsis paragraph re-wrapped */
    for (char *line = h; *line;) {
        size_t n = strcspn(line, "\n");
        if (n > 79)
            fail_msg("help line of %zu columns: %.*s", n, (int)n, line);
        line += n + (line[n] == '\n');
    }
    /* the notes may be wrapped: compare with every line break and its indentation as one blank */
    char *flat = malloc(strlen(h) + 1), *q = flat;
    assert_non_null(flat);
    for (const char *p = h; *p; p++) {
        if (*p == '\n' && p[1] == ' ') {
            *q++ = ' ';
            while (p[1] == ' ')
                p++;
        } else {
            *q++ = *p;
        }
    }
    *q = '\0';
    free(h);
    h = flat;
    /* defaults read from the init struct, in the option's unit; ranges; reloadable rows marked */
    assert_non_null(strstr(h, " -n, --name NAME "));
    assert_non_null(strstr(h, "how many (default 3, 1..1000, reloads)"));
    assert_non_null(strstr(h, "(default 50, >=0, reloads)"));          /* flush-ms: 0.05 s shown as ms */
    assert_non_null(strstr(h, "(default 2, 1..4096)"));                  /* mb: 2 MiB shown as MB */
    assert_non_null(strstr(h, "(default auto, auto | on | off, reloads)"));
    assert_non_null(strstr(h, "nested: --timeout S"));
    assert_null(strstr(h, "--secret"));
    assert_non_null(strstr(h, "--config FILE"));
    assert_non_null(strstr(h, "--log-level LEVEL"));
    assert_non_null(strstr(h, "-h, --help"));
    free(h);
}

/* A usage line is wrapped between options, never between an option and its argument: inference-worker's
 * read "... --sink ENDPOINT --model" and "       DIR --tokenizer FILE [OPTIONS]" on the next line. */
static void test_help_usage_pairs(void **state)
{
    (void)state;
    pf_optcmd cmd = g_cmd;
    cmd.synopsis = "usage: paliflow inference-worker --producer ENDPOINT --sink ENDPOINT --model DIR --tokenizer "
                   "FILE [OPTIONS]\n";
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    pf_opt_help(&cmd, f);
    fclose(f);
    assert_non_null(strstr(buf, "usage: paliflow inference-worker --producer ENDPOINT --sink ENDPOINT\n"
                                "       --model DIR --tokenizer FILE [OPTIONS]\n"));
    free(buf);
    cmd.synopsis = "usage: paliflow generate --model DIR [--tokenizer FILE] --prompt P [--prompt P ...] [options] "
                   "IMAGE...\n";
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    pf_opt_help(&cmd, f);
    fclose(f);
    assert_non_null(strstr(buf, "usage: paliflow generate --model DIR [--tokenizer FILE] --prompt P\n"
                                "       [--prompt P ...] [options] IMAGE...\n"));
    free(buf);
}

static void test_reload(void **state)
{
    (void)state;
    cfg live, fresh;
    pf_err err = {{0}};
    assert_int_equal(parse((const char *[]){"test", "--count", "4", "--timeout", "1", "--name", "a", NULL}, &live,
                           NULL, &err), 0);
    assert_int_equal(parse((const char *[]){"test", "--count", "9", "--mode", "off", "--flush-ms", "30",
                                            "--timeout", "2", "--name", "b", NULL},
                           &fresh, NULL, &err), 0);
    /* count, mode and flush-ms reload; timeout and name need a restart (warned, not copied) */
    assert_int_equal(pf_opt_reload(&g_cmd, &live, &fresh), 3);
    assert_int_equal(live.count, 9);
    assert_int_equal(live.mode, 0);
    assert_true(live.ms_as_s > 0.0299 && live.ms_as_s < 0.0301);
    assert_true(live.sub.timeout == 1);
    assert_string_equal(live.name, "a");
    assert_int_equal(pf_opt_reload(&g_cmd, &live, &fresh), 0);
}

/* --config lines become options before the command line's, parsed by the same table. */
static void test_config_file(void **state)
{
    (void)state;
    char path[] = "/tmp/pf_test_optable_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char text[] = "# a comment\ncount = 12\nflag\nname = \"from file\"\ntag = one\n";
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    const char *argv[] = {"test", "--config", path, "--count", "13", "--tag", "two", "op", NULL};
    int argc2;
    char **argv2;
    pf_err err = {{0}};
    assert_int_equal(pf_config_expand_argv(8, (char **)argv, &argc2, &argv2, &err), 0);
    cfg c;
    cfg_init(&c);
    int first;
    assert_int_equal(pf_opt_parse_args(&g_cmd, &c, argc2, argv2, &first, &err), 0);
    assert_int_equal(c.count, 13);   /* the command line wins */
    assert_int_equal(c.flag, 1);
    assert_string_equal(c.name, "from file");
    assert_int_equal(c.tags.n, 2);   /* repeatable options add up */
    assert_string_equal(argv2[first], "op");
    pf_opt_free(&g_cmd, &c);
    pf_config_free_argv(argc2, argv2);
    /* a bad value in the file is named like one on the command line */
    fd = open(path, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "count = lots\n", 13), 13);
    close(fd);
    assert_int_equal(pf_config_expand_argv(3, (char **)argv, &argc2, &argv2, &err), 0);
    cfg_init(&c);
    assert_int_equal(pf_opt_parse_args(&g_cmd, &c, argc2, argv2, NULL, &err), -1);
    assert_string_equal(err.msg, "--count: want an integer in 1..1000, got 'lots'");
    pf_config_free_argv(argc2, argv2);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_type), cmocka_unit_test(test_errors), cmocka_unit_test(test_no_operands),
        cmocka_unit_test(test_help),       cmocka_unit_test(test_help_usage_pairs),
        cmocka_unit_test(test_reload),     cmocka_unit_test(test_config_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
