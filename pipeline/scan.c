#define _GNU_SOURCE   /* FNM_CASEFOLD (glibc) */
#include "pipeline/scan.h"

#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/file.h"
#include "base/grow.h"
#include "base/log.h"
#include "pipeline/keyset.h"

typedef struct frame {
    char *dir;        /* path as found */
    size_t rel_off;   /* where the path below the root starts in dir (0 = the root itself) */
    char **names;     /* each name is followed, after its '\0', by its d_type (readdir): see name_type */
    size_t n, next;
} frame;

/* The d_type readdir gave NAME (stored after its terminating '\0' by push_dir). DT_REG: a regular file and
 * no symlink, so the walk needs no stat() to know it is no folder (the producer stats each file once anyway,
 * for its size: two stats per file were half the system time of a 1M-file scan). DT_UNKNOWN (file systems
 * that do not fill d_type), links and folders are stat'ed. */
static unsigned char name_type(const char *name) { return (unsigned char)name[strlen(name) + 1]; }

struct pf_scan {
    pf_scan_params o;     /* deep copy: the caller's strings need not outlive pf_scan_open */
    char **owned;
    size_t n_owned;
    size_t next_root;
    FILE *list;
    size_t list_line;   /* lines read from the list (messages name the line) */
    int list_is_stdin;
    frame *stack;
    size_t depth, cap;
    pf_keyset dirs;
    char *cur;
    char *line;
    size_t line_cap;
    /* what the filters skipped, for the summary line (pf_scan_summary) */
    size_t found;            /* entries returned */
    size_t not_included;     /* files that matched no include glob */
    size_t *excl_files;      /* per exclude glob: files it skipped */
    size_t *excl_dirs;       /* per exclude glob: folders it skipped (their contents are never listed) */
    int summarized;          /* the summary line was logged */
    size_t n_hidden;
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The index of the first glob matching NAME or REL, or -1. Case-insensitive (FNM_CASEFOLD) over the whole
 * glob: extensions come in any case from cameras and other systems (IMG_0001.JPG, scan.Tif), and a
 * case-sensitive "*.jpg" silently dropped them. A glob cannot tell "a.jpg" from "A.JPG" apart; no one filters
 * images on that. */
static long match_index(const char *const *globs, size_t n, const char *name, const char *rel)
{
    for (size_t i = 0; i < n; i++)
        if (fnmatch(globs[i], name, FNM_CASEFOLD) == 0 || (rel && fnmatch(globs[i], rel, FNM_CASEFOLD) == 0))
            return (long)i;
    return -1;
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
        if (PF_GROW(f.names, cap, f.n, 1, 64))
            goto oom;
        size_t nl = strlen(de->d_name);
        if (!(f.names[f.n] = malloc(nl + 2)))
            goto oom;
        memcpy(f.names[f.n], de->d_name, nl + 1);
        f.names[f.n][nl + 1] = (char)de->d_type;
        f.n++;
    }
    closedir(d);
    d = NULL;
    qsort(f.names, f.n, sizeof *f.names, cmp_str);
    if (!(f.dir = strdup(dir)))
        goto oom;
    f.rel_off = rel_off;
    if (PF_GROW(s->stack, s->cap, s->depth, 1, 16))
        goto oom;
    s->stack[s->depth++] = f;
    return 0;
oom:
    if (d)
        closedir(d);
    frame_free(&f);
    return pf_errf(err, "scan: out of memory");
}

int pf_scan_open(const pf_scan_params *opts, pf_scan **out, pf_err *err)
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
    if (!oom && opts->n_exclude) {
        s->excl_files = calloc(opts->n_exclude, sizeof *s->excl_files);
        s->excl_dirs = calloc(opts->n_exclude, sizeof *s->excl_dirs);
        oom = !s->excl_files || !s->excl_dirs;
    }
    if (oom) {
        pf_scan_close(s);
        return pf_errf(err, "scan: out of memory");
    }
    s->o = (pf_scan_params){(const char *const *)r, opts->n_roots, list, (const char *const *)i, opts->n_include,
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
    s->found++;
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
            struct stat st;
            int is_dir = name_type(name) != DT_REG && stat(p, &st) == 0 && S_ISDIR(st.st_mode);
            long ex = match_index(s->o.exclude, s->o.n_exclude, name, rel);
            if (ex >= 0) {
                pf_debug("scan", "%s: skipped by exclude '%s'", p, s->o.exclude[ex]);
                (is_dir ? s->excl_dirs : s->excl_files)[ex]++;
                free(p);
                continue;
            }
            if (is_dir) {
                int rc = push_dir(s, p, rel_off, &st, err);
                free(p);
                if (rc)
                    return -1;
                continue;
            }
            /* files, and entries that cannot be stat'ed (broken links, loops): the producer reports them */
            if (s->o.n_include && match_index(s->o.include, s->o.n_include, name, rel) < 0) {
                pf_debug("scan", "%s: matches no include glob, skipped", p);
                s->not_included++;
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
            s->list_line++;
            while (n > 0 && (s->line[n - 1] == '\n' || s->line[n - 1] == '\r'))
                s->line[--n] = '\0';
            /* "path<TAB>prompt" lines were once taken whole as a file name: a tab means a manifest was meant */
            if (memchr(s->line, '\t', (size_t)n))
                return pf_errf(err, "%s:%zu: a tab in a --list line: --list takes one path per line; for a prompt "
                               "per image use --manifest FILE (TSV with a header row 'path<TAB>prompt')",
                               s->o.list_file, s->list_line);
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
        if (!s->summarized) {   /* once, when the walk is complete (not on an early close: counts would lie) */
            char line[1024];
            pf_scan_summary(s, line, sizeof line);
            pf_info("scan", "%s", line);
            s->summarized = 1;
        }
        return 0;
    }
}

size_t pf_scan_found(const pf_scan *s) { return s->found; }
size_t pf_scan_not_included(const pf_scan *s) { return s->not_included; }
size_t pf_scan_excluded_files(const pf_scan *s, size_t i) { return i < s->o.n_exclude ? s->excl_files[i] : 0; }
size_t pf_scan_excluded_dirs(const pf_scan *s, size_t i) { return i < s->o.n_exclude ? s->excl_dirs[i] : 0; }

/* snprintf into BUF at *AT, clamped: a long glob list truncates the line, never overruns it */
static void put(char *buf, size_t cap, size_t *at, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t cap, size_t *at, const char *fmt, ...)
{
    if (*at >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *at, cap - *at, fmt, ap);
    va_end(ap);
    *at = n < 0 ? cap : (size_t)n >= cap - *at ? cap : *at + (size_t)n;
}

void pf_scan_summary(const pf_scan *s, char *buf, size_t cap)
{
    size_t at = 0;
    if (!cap)
        return;
    buf[0] = '\0';
    put(buf, cap, &at, "%zu file%s taken", s->found, s->found == 1 ? "" : "s");
    if (!s->o.n_include && !s->o.n_exclude) {
        put(buf, cap, &at, "; no include/exclude globs");
        return;
    }
    put(buf, cap, &at, "; skipped:");
    const char *sep = " ";
    if (s->o.n_include) {
        put(buf, cap, &at, "%s%zu matching no include glob (", sep, s->not_included);
        for (size_t i = 0; i < s->o.n_include; i++)
            put(buf, cap, &at, "%s%s", i ? " " : "", s->o.include[i]);
        put(buf, cap, &at, ")");
        sep = ", ";
    }
    for (size_t i = 0; i < s->o.n_exclude; i++) {
        size_t nf = s->excl_files[i], nd = s->excl_dirs[i];
        if (nf || !nd)
            put(buf, cap, &at, "%s%zu file%s", sep, nf, nf == 1 ? "" : "s");
        if (nd)
            put(buf, cap, &at, "%s%zu folder%s", nf ? " and " : sep, nd, nd == 1 ? "" : "s");
        put(buf, cap, &at, " by exclude '%s'", s->o.exclude[i]);
        sep = ", ";
    }
    put(buf, cap, &at, " (globs match case-insensitively)");
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
    free(s->excl_files);
    free(s->excl_dirs);
    for (size_t i = 0; s->owned && i < s->n_owned; i++)
        free(s->owned[i]);
    free(s->owned);
    free(s);
}
