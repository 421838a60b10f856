/* config.c - see config.h. */
#include "pipeline/config.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static volatile sig_atomic_t *g_flag;

static void on_signal(int sig)
{
    (void)sig;
    if (g_flag && *g_flag) {
        static const char msg[] = "paliflow: second signal, exiting now\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(130);
    }
    if (g_flag)
        *g_flag = 1;
}

void pf_install_stop_signals(volatile sig_atomic_t *flag)
{
    g_flag = flag;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static volatile sig_atomic_t *g_reload;

static void on_hup(int sig)
{
    (void)sig;
    if (g_reload)
        *g_reload = 1;
}

void pf_install_reload_signal(volatile sig_atomic_t *flag)
{
    g_reload = flag;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_hup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &sa, NULL);
}

#include "base/log.h"

int pf_task_option(const char *name, const char *val, pf_task *t, pf_err *err)
{
    long long iv;
    double dv;
    if (!strcmp(name, "max-new-tokens")) {
        if (pf_parse_int(val, 1, 1 << 20, &iv))
            return pf_errf(err, "--max-new-tokens: want an integer >= 1, got '%s'", val);
        t->max_new_tokens = (int32_t)iv;
    } else if (!strcmp(name, "temperature")) {
        if (pf_parse_double(val, 0, 1e6, &dv))
            return pf_errf(err, "--temperature: want a number >= 0, got '%s'", val);
        t->temperature = dv;
    } else if (!strcmp(name, "top-k")) {
        if (pf_parse_int(val, 0, INT32_MAX, &iv))
            return pf_errf(err, "--top-k: want an integer >= 0, got '%s'", val);
        t->top_k = (int32_t)iv;
    } else if (!strcmp(name, "top-p")) {
        if (pf_parse_double(val, 0, 1, &dv))
            return pf_errf(err, "--top-p: want a number in [0, 1], got '%s'", val);
        t->top_p = dv;
    } else if (!strcmp(name, "repetition-penalty")) {
        if (pf_parse_double(val, 1e-6, 1e6, &dv))
            return pf_errf(err, "--repetition-penalty: want a number > 0, got '%s'", val);
        t->repetition_penalty = dv;
    } else if (!strcmp(name, "seed")) {
        if (pf_parse_int(val, 0, INT64_MAX, &iv))
            return pf_errf(err, "--seed: want an integer >= 0, got '%s'", val);
        t->seed = (uint64_t)iv;
    } else if (!strcmp(name, "autorotate")) {
        t->autorotate = 1;
    } else {
        return 0;
    }
    return 1;
}

