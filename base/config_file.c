/* config_file.c - see config_file.h. */
#include "base/config_file.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

static int push(char ***v, int *n, int *cap, char *s)
{
    if (!s)
        return -1;
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 32;
        char **nv = realloc(*v, (size_t)nc * sizeof *nv);
        if (!nv) {
            free(s);
            return -1;
        }
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = s;
    return 0;
}

static int load(const char *path, char ***v, int *n, int *cap, pf_err *err)
{
    char *text;
    size_t len;
    if (pf_read_file(path, 1 << 20, &text, &len, err))
        return pf_err_prefix(err, "config");
    int rc = 0, lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *l = trim(line);
        if (!*l || *l == '#')
            continue;
        char *eq = strchr(l, '=');
        char *name = l, *val = NULL;
        if (eq) {
            *eq = '\0';
            name = trim(l);
            val = trim(eq + 1);
            size_t vl = strlen(val);
            if (vl >= 2 && ((val[0] == '"' && val[vl - 1] == '"') || (val[0] == '\'' && val[vl - 1] == '\''))) {
                val[vl - 1] = '\0';
                val++;
            }
        }
        if (!*name || strchr(name, ' ') || !strcmp(name, "config")) {
            rc = pf_errf(err, "config %s: line %d: expected 'name = value'", path, lineno);
            break;
        }
        size_t need = strlen(name) + (val ? strlen(val) : 0) + 4;
        char *opt = malloc(need);
        if (opt)
            snprintf(opt, need, val ? "--%s=%s" : "--%s", name, val ? val : "");
        if (push(v, n, cap, opt)) {
            rc = pf_errf(err, "out of memory");
            break;
        }
    }
    free(text);
    return rc;
}

int pf_config_expand_argv(int argc, char **argv, int *out_argc, char ***out_argv, pf_err *err)
{
    char **v = NULL;
    int n = 0, cap = 0;
    if (push(&v, &n, &cap, strdup(argv[0])))
        goto oom;
    /* Config files first (so the command line overrides them), then the command line without them. */
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                pf_config_free_argv(n, v);
                return pf_errf(err, "--config needs a FILE");
            }
            path = argv[++i];
        } else if (!strncmp(argv[i], "--config=", 9)) {
            path = argv[i] + 9;
        }
        if (path && load(path, &v, &n, &cap, err)) {
            pf_config_free_argv(n, v);
            return -1;
        }
    }
    int after_dashdash = 0;
    for (int i = 1; i < argc; i++) {
        if (!after_dashdash && !strcmp(argv[i], "--"))
            after_dashdash = 1;
        else if (!after_dashdash && !strcmp(argv[i], "--config")) {
            i++;
            continue;
        } else if (!after_dashdash && !strncmp(argv[i], "--config=", 9))
            continue;
        if (push(&v, &n, &cap, strdup(argv[i])))
            goto oom;
    }
    /* NULL-terminate like a real argv (getopt does not need it; other code may) */
    if (push(&v, &n, &cap, strdup("")))
        goto oom;
    free(v[--n]);
    v[n] = NULL;
    *out_argc = n;
    *out_argv = v;
    return 0;
oom:
    pf_config_free_argv(n, v);
    return pf_errf(err, "out of memory");
}

void pf_config_free_argv(int argc, char **argv)
{
    if (!argv)
        return;
    for (int i = 0; i < argc; i++)
        free(argv[i]);
    free(argv);
}
