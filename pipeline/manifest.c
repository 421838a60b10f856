/* manifest.c - JSONL / CSV / TSV manifests into items (manifest.h). Every line becomes a JSON object first
 * (CSV and TSV cells as strings), so the three formats share one set of rules for the columns. Lines are read
 * with a hard cap (PF_MANIFEST_MAX_LINE): a huge line costs its bytes read, never its size in memory. */
#include "pipeline/manifest.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"
#include "base/log.h"
#include "base/option.h"

struct pf_manifest {
    FILE *f;
    int own;
    char *name, *dir;
    pf_manifest_format fmt;
    char **cols;
    size_t n_cols;
    size_t line;          /* lines consumed so far */
    char *buf;            /* the current record, NUL-terminated (PF_MANIFEST_MAX_LINE + 1 bytes) */
    size_t len;
    json_t *obj;          /* the current line as an object (JSONL: parsed; CSV/TSV: built from cells) */
    char *path;           /* the current item's resolved path */
    char *meta;
    const char *prompts[PF_MANIFEST_MAX_PROMPTS];
    size_t bad, items;
    char last[600];
};

/* A record as read: its first line, whether it was cut (too long), held a NUL, or ended inside quotes. */
typedef struct rec_info {
    size_t line;
    int too_long, has_nul, open_quote;
} rec_info;

/* Read one record into m->buf: up to an unquoted newline (CSV: quotes may span lines). 1 read, 0 end, -1 error. */
static int read_record(pf_manifest *m, rec_info *ri, pf_err *err)
{
    memset(ri, 0, sizeof *ri);
    ri->line = m->line + 1;
    m->len = 0;
    int c, any = 0, inq = 0;
    while ((c = getc(m->f)) != EOF) {
        any = 1;
        if (c == '\n') {
            m->line++;
            if (!inq)
                break;
        }
        if (c == '"' && m->fmt == PF_MANIFEST_CSV)
            inq = !inq;
        if (c == '\0')
            ri->has_nul = 1;
        if (m->len < PF_MANIFEST_MAX_LINE)
            m->buf[m->len++] = (char)c;
        else
            ri->too_long = 1;   /* keep reading to the record's end, storing nothing more */
    }
    if (ferror(m->f))
        return pf_errf(err, "%s: line %zu: read error: %s", m->name, ri->line, strerror(errno));
    if (!any)
        return 0;
    if (c == EOF)
        m->line++;   /* a last line without a newline still counts */
    ri->open_quote = inq;
    while (m->len > 0 && m->buf[m->len - 1] == '\r')
        m->len--;
    m->buf[m->len] = '\0';
    return 1;
}

static void bad_line(pf_manifest *m, size_t line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bad_line(pf_manifest *m, size_t line, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    snprintf(m->last, sizeof m->last, "%s:%zu: %s", m->name, line, why);
    pf_warn("manifest", "%s (line skipped)", m->last);
    m->bad++;
}

/* Split m->buf into cells in place (CSV: RFC 4180 quotes; TSV: tabs). *n = cells found (at most CAP); -1 with
 * WHY on a malformed record. */
static int split_cells(pf_manifest *m, char **cells, size_t cap, size_t *n, const char **why)
{
    char *s = m->buf, *end = m->buf + m->len;
    *n = 0;
    char sep = m->fmt == PF_MANIFEST_TSV ? '\t' : ',';
    for (;;) {
        if (*n == cap)
            return *why = "more fields than the header's columns", -1;
        if (m->fmt == PF_MANIFEST_CSV && s < end && *s == '"') {
            char *w = s, *r = s + 1;   /* unquote in place: the cell ends at a quote not followed by a quote */
            cells[(*n)++] = w;
            for (;;) {
                if (r >= end)
                    return *why = "unterminated quoted field", -1;
                if (*r == '"') {
                    if (r + 1 < end && r[1] == '"') {
                        *w++ = '"';
                        r += 2;
                        continue;
                    }
                    r++;
                    break;
                }
                *w++ = *r++;
            }
            *w = '\0';
            if (r == end)
                return 0;
            if (*r != sep)
                return *why = "a character after a closing quote (quote the whole field)", -1;
            s = r + 1;
            continue;
        }
        cells[(*n)++] = s;
        char *e = s;
        while (e < end && *e != sep)
            e++;
        if (e == end)
            return 0;
        *e = '\0';
        s = e + 1;
    }
}

static int read_header(pf_manifest *m, pf_err *err)
{
    rec_info ri;
    int r = read_record(m, &ri, err);
    if (r < 0)
        return -1;
    if (r == 0)
        return pf_errf(err, "%s: empty manifest: a CSV/TSV manifest starts with a header row (path,prompt,...)",
                       m->name);
    if (ri.too_long || ri.has_nul || ri.open_quote)
        return pf_errf(err, "%s:1: the header row is %s", m->name,
                       ri.too_long ? "too long" : ri.has_nul ? "binary (a NUL byte)" : "an unterminated quote");
    char **cells = malloc(PF_MANIFEST_MAX_COLUMNS * sizeof *cells);
    if (!cells)
        return pf_errf(err, "%s: out of memory", m->name);
    const char *why = NULL;
    size_t n = 0;
    if (split_cells(m, cells, PF_MANIFEST_MAX_COLUMNS, &n, &why)) {
        free(cells);
        return pf_errf(err, "%s:1: header row: %s", m->name,
                       strcmp(why, "more fields than the header's columns") ? why : "more than 1024 columns");
    }
    int has_path = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *probe = json_string(cells[i]);   /* column names become JSON keys: UTF-8 only */
        json_decref(probe);
        const char *bad = !cells[i][0] ? "an empty column name" : !probe ? "a column name that is not UTF-8" : NULL;
        for (size_t j = 0; !bad && j < i; j++)
            if (!strcmp(cells[i], cells[j]))
                bad = "a repeated column name";
        if (bad) {
            pf_errf(err, "%s:1: header row: %s (column %zu)", m->name, bad, i + 1);
            free(cells);
            return -1;
        }
        has_path |= !strcmp(cells[i], "path");
    }
    if (!has_path) {
        pf_errf(err, "%s:1: header row has no 'path' column (got '%s'%s)", m->name, n ? cells[0] : "",
                n > 1 ? ", ..." : "");
        free(cells);
        return -1;
    }
    m->cols = calloc(n, sizeof *m->cols);
    for (size_t i = 0; m->cols && i < n; i++)
        if (!(m->cols[m->n_cols++] = strdup(cells[i]))) {
            free(cells);
            return pf_errf(err, "%s: out of memory", m->name);
        }
    free(cells);
    return m->cols ? 0 : pf_errf(err, "%s: out of memory", m->name);
}

static pf_manifest_format sniff(FILE *f, const char *name, pf_manifest_format fmt)
{
    if (fmt != PF_MANIFEST_AUTO)
        return fmt;
    const char *dot = strrchr(name, '.');
    if (dot && (!strcasecmp(dot, ".jsonl") || !strcasecmp(dot, ".ndjson") || !strcasecmp(dot, ".json")))
        return PF_MANIFEST_JSONL;
    if (dot && !strcasecmp(dot, ".csv"))
        return PF_MANIFEST_CSV;
    if (dot && (!strcasecmp(dot, ".tsv") || !strcasecmp(dot, ".tab")))
        return PF_MANIFEST_TSV;
    /* No telling extension: look at the first line (pushed back; a manifest is a regular file or a pipe
     * read once, so only the bytes peeked are put back with ungetc, one at a time, in reverse). */
    char peek[512];
    size_t n = 0;
    int c;
    while (n < sizeof peek && (c = getc(f)) != EOF) {
        peek[n++] = (char)c;
        if (c == '\n')
            break;
    }
    pf_manifest_format got = PF_MANIFEST_CSV;
    size_t i = 0;
    while (i < n && (peek[i] == ' ' || peek[i] == '\t'))
        i++;
    if (i < n && peek[i] == '{')
        got = PF_MANIFEST_JSONL;
    else if (memchr(peek, '\t', n))
        got = PF_MANIFEST_TSV;
    /* glibc guarantees one byte of pushback only: rewind instead when the stream can seek */
    if (fseek(f, -(long)n, SEEK_CUR) != 0)
        for (size_t k = n; k > 0; k--)
            ungetc((unsigned char)peek[k - 1], f);
    return got;
}

int pf_manifest_open_stream(FILE *f, const char *name, const char *dir, pf_manifest_format fmt, pf_manifest **out,
                            pf_err *err)
{
    *out = NULL;
    pf_manifest *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name)) || (dir && !(m->dir = strdup(dir))) ||
        !(m->buf = malloc(PF_MANIFEST_MAX_LINE + 1))) {
        pf_manifest_close(m);
        return pf_errf(err, "%s: out of memory", name);
    }
    m->f = f;
    m->fmt = sniff(f, name, fmt);
    if (m->fmt != PF_MANIFEST_JSONL && read_header(m, err)) {
        pf_manifest_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

int pf_manifest_open(const char *path, pf_manifest_format fmt, pf_manifest **out, pf_err *err)
{
    *out = NULL;
    if (!strcmp(path, "-"))
        return pf_errf(err, "--manifest -: give a file (the job store keeps its name to resume)");
    /* read through base/file.h's rules: a fifo or device named as a manifest is refused, not waited on */
    struct stat st;
    int fd = pf_open_regular(path, &st, NULL, err);
    if (fd < 0)
        return -1;
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return pf_errf(err, "%s: %s", path, strerror(errno));
    }
    char *copy = strdup(path);
    if (!copy) {
        fclose(f);
        return pf_errf(err, "%s: out of memory", path);
    }
    char *slash = strrchr(copy, '/');
    const char *dir = NULL;
    if (slash) {
        slash[slash == copy ? 1 : 0] = '\0';
        dir = copy;
    }
    int rc = pf_manifest_open_stream(f, path, dir, fmt, out, err);
    free(copy);
    if (rc) {
        fclose(f);
        return -1;
    }
    (*out)->own = 1;
    return 0;
}

/* A setting's value: a JSON number, or (CSV, TSV, or quoted in JSONL) its text. */
static int setting_text(json_t *v, char *buf, size_t cap)
{
    if (json_is_string(v))
        snprintf(buf, cap, "%s", json_string_value(v));
    else if (json_is_integer(v))
        snprintf(buf, cap, "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, cap, "%.17g", json_real_value(v));
    else
        return -1;
    return 0;
}

/* Column K = V of the current line into the item; WHY on a bad value. 1: taken; 0: not a known column. */
static int take_known(pf_manifest *m, const char *k, json_t *v, pf_manifest_item *it, json_t *meta, const char **why)
{
    char t[64];
    long long iv;
    double dv;
    pf_manifest_settings *s = &it->set;
    if (!strcmp(k, "path")) {
        if (!json_is_string(v) || !json_string_length(v))
            return *why = "'path' is not a non-empty string", -1;
        const char *p = json_string_value(v);
        free(m->path);
        m->path = p[0] != '/' && m->dir ? pf_path_join(m->dir, p) : strdup(p);
        return m->path ? 1 : (*why = "out of memory", -1);
    }
    if (!strcmp(k, "prompt") || !strcmp(k, "task")) {
        if (it->n_prompts)
            return *why = "both 'prompt' and 'task' given (one is enough)", -1;
        if (json_is_string(v)) {
            if (!json_string_length(v))
                return *why = "empty prompt", -1;
            it->prompts = m->prompts;
            m->prompts[it->n_prompts++] = json_string_value(v);
            return 1;
        }
        if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > PF_MANIFEST_MAX_PROMPTS)
            return *why = "'prompt' is not a string or a list of 1 to 64 strings", -1;
        for (size_t i = 0; i < json_array_size(v); i++) {
            json_t *e = json_array_get(v, i);
            if (!json_is_string(e) || !json_string_length(e))
                return *why = "a prompt in the list is not a non-empty string", -1;
            m->prompts[i] = json_string_value(e);
        }
        it->prompts = m->prompts;
        it->n_prompts = json_array_size(v);
        return 1;
    }
    if (!strcmp(k, "id")) {
        if (!json_is_string(v) && !json_is_integer(v))
            return *why = "'id' is not a string or an integer", -1;
        json_object_set(meta, "id", v);
        return 1;
    }
    int known = 1;
    if (!strcmp(k, "max_new_tokens")) {
        if (setting_text(v, t, sizeof t) || pf_parse_int(t, 1, 1 << 20, &iv))
            return *why = "'max_new_tokens' is not an integer >= 1", -1;
        s->has_max_new_tokens = 1, s->max_new_tokens = (int32_t)iv;
    } else if (!strcmp(k, "temperature")) {
        if (setting_text(v, t, sizeof t) || pf_parse_double(t, 0, 1e6, &dv))
            return *why = "'temperature' is not a number >= 0", -1;
        s->has_temperature = 1, s->temperature = dv;
    } else if (!strcmp(k, "top_k")) {
        if (setting_text(v, t, sizeof t) || pf_parse_int(t, 0, INT32_MAX, &iv))
            return *why = "'top_k' is not an integer >= 0", -1;
        s->has_top_k = 1, s->top_k = (int32_t)iv;
    } else if (!strcmp(k, "top_p")) {
        if (setting_text(v, t, sizeof t) || pf_parse_double(t, 0, 1, &dv))
            return *why = "'top_p' is not a number in [0, 1]", -1;
        s->has_top_p = 1, s->top_p = dv;
    } else if (!strcmp(k, "seed")) {
        if (setting_text(v, t, sizeof t) || pf_parse_int(t, 0, INT64_MAX, &iv))
            return *why = "'seed' is not an integer >= 0", -1;
        s->has_seed = 1, s->seed = (uint64_t)iv;
    } else {
        known = 0;
    }
    return known;
}

/* The current line's object into *it: 0, or -1 with WHY. */
static int item_from_object(pf_manifest *m, json_t *o, pf_manifest_item *it, const char **why)
{
    json_t *meta = json_object(), *extra = json_object();
    if (!meta || !extra) {
        json_decref(meta);
        json_decref(extra);
        return *why = "out of memory", -1;
    }
    free(m->path);
    m->path = NULL;
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(o, k, v)
    {
        int r = take_known(m, k, v, it, meta, why);
        if (r < 0) {
            rc = -1;
            break;
        }
        if (r == 0)
            json_object_set(extra, k, v);   /* carried unchanged into the record */
    }
    if (!rc && !m->path)
        *why = "no 'path'", rc = -1;
    if (!rc && json_object_size(extra))
        json_object_set(meta, "extra", extra);
    free(m->meta);
    m->meta = NULL;
    if (!rc && json_object_size(meta) && !(m->meta = json_dumps(meta, JSON_COMPACT)))
        *why = "out of memory", rc = -1;
    json_decref(meta);
    json_decref(extra);
    it->path = m->path;
    it->meta = m->meta;
    return rc;
}

/* CSV/TSV: the record's cells as an object of strings (empty cells left out). */
static json_t *object_from_cells(pf_manifest *m, const char **why)
{
    char **cells = malloc((m->n_cols + 1) * sizeof *cells);
    if (!cells)
        return *why = "out of memory", NULL;
    size_t n = 0;
    json_t *o = NULL;
    if (split_cells(m, cells, m->n_cols, &n, why) == 0) {
        if (n != m->n_cols) {
            *why = "fewer fields than the header's columns";
        } else if ((o = json_object())) {
            for (size_t i = 0; i < n; i++) {
                if (!cells[i][0])
                    continue;
                json_t *s = json_string(cells[i]);
                if (!s) {
                    *why = "not valid UTF-8";
                    json_decref(o);
                    o = NULL;
                    break;
                }
                json_object_set_new(o, m->cols[i], s);
            }
        } else {
            *why = "out of memory";
        }
    }
    free(cells);
    return o;
}

int pf_manifest_next(pf_manifest *m, pf_manifest_item *it, pf_err *err)
{
    for (;;) {
        memset(it, 0, sizeof *it);
        json_decref(m->obj);
        m->obj = NULL;
        rec_info ri;
        int r = read_record(m, &ri, err);
        if (r <= 0)
            return r;
        it->line = ri.line;
        size_t blank = strspn(m->buf, " \t");
        if (blank == m->len && !ri.too_long)
            continue;   /* blank lines are allowed anywhere */
        if (ri.too_long) {
            bad_line(m, ri.line, "longer than %u bytes", PF_MANIFEST_MAX_LINE);
            continue;
        }
        if (ri.has_nul) {
            bad_line(m, ri.line, "holds a NUL byte (binary data, not a manifest line)");
            continue;
        }
        if (ri.open_quote) {
            bad_line(m, ri.line, "unterminated quoted field (it runs to the end of the file)");
            continue;
        }
        const char *why = NULL;
        if (m->fmt == PF_MANIFEST_JSONL) {
            json_error_t je;
            m->obj = json_loadb(m->buf, m->len, JSON_REJECT_DUPLICATES, &je);
            if (!m->obj) {
                bad_line(m, ri.line, "not JSON: %s (column %d)", je.text, je.column);
                continue;
            }
            if (!json_is_object(m->obj)) {
                bad_line(m, ri.line, "not a JSON object");
                continue;
            }
        } else if (!(m->obj = object_from_cells(m, &why))) {
            bad_line(m, ri.line, "%s", why);
            continue;
        }
        if (item_from_object(m, m->obj, it, &why)) {
            bad_line(m, ri.line, "%s", why);
            continue;
        }
        m->items++;
        return 1;
    }
}

size_t pf_manifest_bad_lines(const pf_manifest *m) { return m->bad; }
size_t pf_manifest_items(const pf_manifest *m) { return m->items; }
const char *pf_manifest_last_error(const pf_manifest *m) { return m->last; }

void pf_manifest_close(pf_manifest *m)
{
    if (!m)
        return;
    if (m->own && m->f)
        fclose(m->f);
    for (size_t i = 0; i < m->n_cols; i++)
        free(m->cols[i]);
    free(m->cols);
    json_decref(m->obj);
    free(m->path);
    free(m->meta);
    free(m->buf);
    free(m->name);
    free(m->dir);
    free(m);
}
