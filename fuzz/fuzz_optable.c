/* libFuzzer: option tables (base/optable.h) and --config files (base/config_file.h). The input is split at
 * NUL bytes into a command line, and its first part also serves as a config file's text; whatever the bytes,
 * parsing returns 0, 1 or -1 with a message, never crashes, and a parsed struct holds only in-range values.
 * Run: build-fuzz/fuzz/fuzz_optable -max_total_time=120 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/config_file.h"
#include "base/optable.h"

typedef struct obj {
    const char *s;
    int i, flag, mode;
    uint64_t u;
    double d;
    size_t z;
    pf_opt_list list;
} obj;

static void obj_init(void *o)
{
    *(obj *)o = (obj){.i = 5, .mode = -1, .d = 1, .z = 1};
}

static const pf_opt_choice g_modes[] = {{"auto", -1}, {"on", 1}, {"off", 0}, {NULL, 0}};

#define T obj
static const pf_opt g_rows[] = {
    {"str", 's', PF_OPT_STR, offsetof(T, s), .flags = PF_OPT_NONEMPTY, .arg = "S", .help = "s"},
    PF_OPT_ROW_INT("int", T, i, -10, 1000, PF_OPT_RELOAD, "N", "i"),
    PF_OPT_ROW_FLAG("flag", T, flag, 0, "f"),
    PF_OPT_ROW_ENUM("mode", T, mode, g_modes, 0, "M", "m"),
    PF_OPT_ROW_U64("u64", T, u, 0, INT64_MAX, 0, "N", "u"),
    PF_OPT_ROW_DOUBLE("dbl", T, d, 0.001, 1e9, 0, "D", "d"),
    {"size", 'z', PF_OPT_SIZE, offsetof(T, z), 1, 4096, 1048576, .arg = "N", .help = "z"},
    PF_OPT_ROW_LIST("list", T, list, "L", "l"),
    PF_OPT_END,
};
#undef T

static const pf_optcmd g_cmd = {.name = "fuzz", .synopsis = "usage: fuzz\n", .opts = g_rows, .size = sizeof(obj),
                                .init = obj_init, .operands = 1};

static void check(const obj *o)
{
    if (o->i < -10 || o->i > 1000 || o->d < 0.001 || o->d > 1e9 || o->z < 1 || o->z > (size_t)4096 << 20 ||
        o->u > (uint64_t)INT64_MAX || (o->mode != -1 && o->mode != 0 && o->mode != 1) || (o->s && !*o->s))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    /* argv: "fuzz", then the NUL-separated parts */
    char *buf = malloc(size + 1);
    char **argv = calloc(size + 3, sizeof *argv);
    if (!buf || !argv)
        goto out;
    memcpy(buf, data, size);
    buf[size] = '\0';
    int argc = 0;
    argv[argc++] = "fuzz";
    for (size_t i = 0; i <= size; i += strlen(buf + i) + 1)
        argv[argc++] = buf + i;
    obj o;
    obj_init(&o);
    pf_err err = {{0}};
    int rc = pf_opt_parse_args(&g_cmd, &o, argc, argv, NULL, &err);
    if (rc < -1 || rc > 1 || (rc == -1 && !err.msg[0]))
        abort();
    if (rc == 0)
        check(&o);
    pf_opt_free(&g_cmd, &o);
    /* the first part as a config file */
    char path[] = "/tmp/fuzz_optable_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) {
        size_t n = strlen(buf);
        if (write(fd, buf, n) == (ssize_t)n) {
            char *cargv[] = {"fuzz", "--config", path, NULL};
            int argc2;
            char **argv2;
            if (pf_config_expand_argv(3, cargv, &argc2, &argv2, &err) == 0) {
                obj_init(&o);
                if (pf_opt_parse_args(&g_cmd, &o, argc2, argv2, NULL, &err) == 0)
                    check(&o);
                pf_opt_free(&g_cmd, &o);
                pf_config_free_argv(argc2, argv2);
            }
        }
        close(fd);
        unlink(path);
    }
out:
    free(argv);
    free(buf);
    return 0;
}
