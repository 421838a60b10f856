#include "pipeline/scan.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/file.h"
#include "base/log.h"
#include "pipeline/keyset.h"

typedef struct frame {
    char *dir;        /* path as found */
    size_t rel_off;   /* where the path below the root starts in dir (0 = the root itself) */
    char **names;
    size_t n, next;
} frame;

struct pf_scan {
    pf_scan_opts o;     /* deep copy: the caller's strings need not outlive pf_scan_open */
    char **owned;
    size_t n_owned;
    size_t next_root;
    FILE *list;
    int list_is_stdin;
    frame *stack;
    size_t depth, cap;
    pf_keyset dirs;
    char *cur;
    char *line;
    size_t line_cap;
    size_t n_hidden;
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int matches(const char *const *globs, size_t n, const char *name, const char *rel)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(globs[i], name, 0) == 0 || (rel && fnmatch(globs[i], rel, 0) == 0))
            return 1;
    return 0;
}

static void frame_free(frame *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->names[i]);
    free(f->names);
    free(f->dir);
    memset(f, 0, sizeof *f);
}

/* Enter a directory once: remember (dev, inode); list and sort its entries. */
static int push_dir(pf_scan *s, const char *dir, size_t rel_off, const struct stat *st, pf_err *err)
{
    int added = pf_keyset_add(&s->dirs, (uint64_t)st->st_dev, (uint64_t)st->st_ino);
    if (added < 0)
        return pf_errf(err, "scan: out of memory");
    if (added == 0) {
        pf_debug("scan", "%s: directory already visited (symlink loop or repeat), skipped", dir);
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        pf_warn("scan", "%s: cannot list: %s (skipped)", dir, strerror(errno));
        return 0;
    }
    frame f = {0};
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (f.n == cap) {
            size_t nc = cap ? 2 * cap : 64;
            char **nn = realloc(f.names, nc * sizeof *nn);
            if (!nn)
                goto oom;
            f.names = nn;
            cap = nc;
        }
        if (!(f.names[f.n] = strdup(de->d_name)))
            goto oom;
        f.n++;
    }
    closedir(d);
    d = NULL;
    qsort(f.names, f.n, sizeof *f.names, cmp_str);
    if (!(f.dir = strdup(dir)))
        goto oom;
    f.rel_off = rel_off;
    if (s->depth == s->cap) {
        size_t nc = s->cap ? 2 * s->cap : 16;
        frame *ns = realloc(s->stack, nc * sizeof *ns);
        if (!ns)
            goto oom;
        s->stack = ns;
        s->cap = nc;
    }
    s->stack[s->depth++] = f;
    return 0;
oom:
    if (d)
        closedir(d);
    frame_free(&f);
    return pf_errf(err, "scan: out of memory");
}

int pf_scan_open(const pf_scan_opts *opts, pf_scan **out, pf_err *err)
{
    *out = NULL;
    for (size_t i = 0; i < opts->n_roots; i++) {
        struct stat st;
        if (stat(opts->roots[i], &st) != 0)
            return pf_errf(err, "%s: %s", opts->roots[i], strerror(errno));
    }
    pf_scan *s = calloc(1, sizeof *s);
    if (!s)
        return pf_errf(err, "scan: out of memory");
    pf_keyset_init(&s->dirs);
    size_t total = opts->n_roots + opts->n_include + opts->n_exclude + 1;
    s->owned = calloc(total, sizeof *s->owned);
    char **r = s->owned, **i = r + opts->n_roots, **x = i + opts->n_include;
    int oom = !s->owned;
    for (size_t k = 0; !oom && k < opts->n_roots; k++)
        oom = !(r[k] = strdup(opts->roots[k]));
    for (size_t k = 0; !oom && k < opts->n_include; k++)
        oom = !(i[k] = strdup(opts->include[k]));
    for (size_t k = 0; !oom && k < opts->n_exclude; k++)
        oom = !(x[k] = strdup(opts->exclude[k]));
    char *list = NULL;
    if (!oom && opts->list_file)
        oom = !(list = s->owned[total - 1] = strdup(opts->list_file));
    s->n_owned = total;
    if (oom) {
        pf_scan_close(s);
        return pf_errf(err, "scan: out of memory");
    }
    s->o = (pf_scan_opts){(const char *const *)r, opts->n_roots, list, (const char *const *)i, opts->n_include,
                          (const char *const *)x, opts->n_exclude, opts->include_hidden};
    if (opts->list_file) {
        if (!strcmp(opts->list_file, "-")) {
            s->list = stdin;
            s->list_is_stdin = 1;
        } else if (!(s->list = fopen(opts->list_file, "r"))) {
            pf_errf(err, "%s: %s", opts->list_file, strerror(errno));
            pf_scan_close(s);
            return -1;
        }
    }
    *out = s;
    return 0;
}

static int set_cur(pf_scan *s, char *p, const char **path)
{
    free(s->cur);
    s->cur = p;
    *path = p;
    return 1;
}

int pf_scan_next(pf_scan *s, const char **path, pf_err *err)
{
    for (;;) {
        if (s->depth > 0) {
            frame *f = &s->stack[s->depth - 1];
            if (f->next == f->n) {
                frame_free(f);
                s->depth--;
                continue;
            }
            const char *name = f->names[f->next++];
            if (name[0] == '.' && !s->o.include_hidden) {
                s->n_hidden++;
                continue;
            }
            char *p = pf_path_join(f->dir, name);
            if (!p)
                return pf_errf(err, "scan: out of memory");
            size_t rel_off = f->rel_off ? f->rel_off : strlen(f->dir) + (f->dir[strlen(f->dir) - 1] == '/' ? 0 : 1);
            const char *rel = p + rel_off;
            if (matches(s->o.exclude, s->o.n_exclude, name, rel)) {
                free(p);
                continue;
            }
            struct stat st;
            if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
                int rc = push_dir(s, p, rel_off, &st, err);
                free(p);
                if (rc)
                    return -1;
                continue;
            }
            /* files, and entries that cannot be stat'ed (broken links, loops): the producer reports them */
            if (s->o.n_include && !matches(s->o.include, s->o.n_include, name, rel)) {
                free(p);
                continue;
            }
            return set_cur(s, p, path);
        }
        if (s->next_root < s->o.n_roots) {
            const char *root = s->o.roots[s->next_root++];
            struct stat st;
            if (stat(root, &st) == 0 && S_ISDIR(st.st_mode)) {
                if (push_dir(s, root, 0, &st, err))
                    return -1;
                continue;
            }
            char *p = strdup(root);   /* a file named explicitly is always taken */
            if (!p)
                return pf_errf(err, "scan: out of memory");
            return set_cur(s, p, path);
        }
        if (s->list) {
            ssize_t n = getline(&s->line, &s->line_cap, s->list);
            if (n < 0) {
                if (ferror(s->list))
                    return pf_errf(err, "%s: read error", s->o.list_file);
                if (!s->list_is_stdin)
                    fclose(s->list);
                s->list = NULL;
                continue;
            }
            while (n > 0 && (s->line[n - 1] == '\n' || s->line[n - 1] == '\r'))
                s->line[--n] = '\0';
            if (n == 0)
                continue;
            struct stat st;
            if (stat(s->line, &st) == 0 && S_ISDIR(st.st_mode)) {   /* a folder in a list: walk it */
                if (push_dir(s, s->line, 0, &st, err))
                    return -1;
                continue;
            }
            char *p = strdup(s->line);
            if (!p)
                return pf_errf(err, "scan: out of memory");
            return set_cur(s, p, path);
        }
        return 0;
    }
}

size_t pf_scan_hidden_skipped(const pf_scan *s) { return s ? s->n_hidden : 0; }

void pf_scan_close(pf_scan *s)
{
    if (!s)
        return;
    while (s->depth > 0)
        frame_free(&s->stack[--s->depth]);
    free(s->stack);
    if (s->list && !s->list_is_stdin)
        fclose(s->list);
    pf_keyset_free(&s->dirs);
    free(s->cur);
    free(s->line);
    for (size_t i = 0; s->owned && i < s->n_owned; i++)
        free(s->owned[i]);
    free(s->owned);
    free(s);
}
