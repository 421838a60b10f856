/* optable.c - see optable.h. */
#include "base/optable.h"

#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/option.h"

#define HELP_COLS 80
#define HELP_INDENT 27   /* where the help text of every option starts */
#define ROW_BASE 256     /* getopt's val for row i is ROW_BASE + i (above every short option) */

static int is_end(const pf_opt *o) { return !o->name && !o->help; }

static size_t n_rows(const pf_optcmd *cmd)
{
    size_t n = 0;
    while (!is_end(&cmd->opts[n]))
        n++;
    return n;
}

static int takes_value(const pf_opt *o) { return o->type != PF_OPT_FLAG && (o->type != PF_OPT_FUNC || o->arg); }

static double scale_of(const pf_opt *o) { return o->scale > 0 ? o->scale : 1; }

/* ---- the options every command takes ---- */

int pf_opt_log_level(const pf_opt *opt, void *field, const char *val, pf_err *err)
{
    (void)opt;
    (void)field;
    pf_log_level l;
    if (pf_log_parse_level(val, &l))
        return pf_errf(err, "--log-level: want error|warn|info|debug, got '%s'", val);
    /* applied at once: a reload that parses the config again changes the level the same way */
    pf_log_set_level(l);
    return 0;
}

static const pf_opt g_common[] = {
    {"config", 0, PF_OPT_FUNC, 0, .arg = "FILE", .flags = PF_OPT_NO_DEFAULT,
     .help = "options from FILE: 'name = value' lines, 'name' for a flag, '#' comments; the command line "
             "wins"},
    {"log-level", 0, PF_OPT_FUNC, 0, .fn = pf_opt_log_level, .arg = "LEVEL", .flags = PF_OPT_NO_DEFAULT,
     .help = "error | warn | info | debug (also PALIFLOW_LOG)"},
    {"help", 'h', PF_OPT_FLAG, 0, .flags = PF_OPT_NO_DEFAULT, .help = "this text"},
    PF_OPT_END,
};
enum { COMMON_CONFIG, COMMON_LOG_LEVEL, COMMON_HELP, N_COMMON };

/* The common rows a table does not override (a table may give its own --log-level with another default). */
static int common_used(const pf_optcmd *cmd, int i)
{
    return pf_opt_find(cmd, g_common[i].name) == NULL;
}

const pf_opt *pf_opt_find(const pf_optcmd *cmd, const char *name)
{
    for (const pf_opt *o = cmd->opts; !is_end(o); o++)
        if (o->name && !strcmp(o->name, name))
            return o;
    return NULL;
}

/* ---- setting a field ---- */

static void fmt_num(char *buf, size_t cap, double v)
{
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, cap, "%.0f", v);
    else
        snprintf(buf, cap, "%g", v);
}

/* A double bound as an integer bound: INT64_MAX is not a double, and converting 2^63 back overflows. */
static long long to_ll(double v)
{
    return v >= 9.2e18 ? LLONG_MAX : v <= -9.2e18 ? LLONG_MIN : (long long)v;
}

/* Row O's range as the reader wants it: "LO..HI", or ">= LO" when the upper bound is only there against
 * overflow (2^31 for integers, a million for numbers). */
static void range_text(const pf_opt *o, char *buf, size_t cap)
{
    char lo[32], hi[32];
    fmt_num(lo, sizeof lo, o->lo);
    fmt_num(hi, sizeof hi, o->hi);
    if (o->hi >= (o->type == PF_OPT_INT || o->type == PF_OPT_U64 ? 2147483647.0 : 1e6))
        snprintf(buf, cap, ">=%s", lo);   /* no blank: --help never wraps it apart */
    else
        snprintf(buf, cap, "%s..%s", lo, hi);
}

static int list_add(pf_opt_list *l, const char *val, size_t cap, pf_err *err)
{
    /* CAP (argc) bounds how many values one command line can hold, so one allocation suffices */
    if (!l->v && !(l->v = calloc(cap + 1, sizeof *l->v)))
        return pf_errf(err, "out of memory");
    if (l->n >= cap)
        return pf_errf(err, "too many values");
    l->v[l->n++] = val;
    return 0;
}

static int store(const pf_opt *o, void *field, const char *val, size_t argc, pf_err *err);

static int set_field(const pf_opt *o, void *obj, const char *val, size_t argc, pf_err *err)
{
    void *field = (char *)obj + o->offset;
    if (store(o, field, val, argc, err))
        return -1;
    return o->type != PF_OPT_FUNC && o->fn ? o->fn(o, field, val, err) : 0;
}

static int store(const pf_opt *o, void *field, const char *val, size_t argc, pf_err *err)
{
    long long iv;
    double dv;
    char range[80];
    range_text(o, range, sizeof range);
    switch (o->type) {
    case PF_OPT_FLAG:
        *(int *)field = !(o->flags & PF_OPT_CLEAR);
        return 0;
    case PF_OPT_STR:
        if ((o->flags & PF_OPT_NONEMPTY) && !*val)
            return pf_errf(err, "--%s: needs a value", o->name);
        *(const char **)field = val;
        return 0;
    case PF_OPT_LIST:
        if ((o->flags & PF_OPT_NONEMPTY) && !*val)
            return pf_errf(err, "--%s: needs a value", o->name);
        return list_add(field, val, argc, err);
    case PF_OPT_INT:
    case PF_OPT_U64:
        if (pf_parse_int(val, to_ll(o->lo), to_ll(o->hi), &iv))
            return pf_errf(err, "--%s: want an integer %s%s, got '%s'", o->name, range[0] == '>' ? ">= " : "in ", range + (range[0] == '>' ? 2 : 0),
                           val);
        if (o->type == PF_OPT_INT)
            *(int *)field = (int)iv;
        else
            *(uint64_t *)field = (uint64_t)iv;
        return 0;
    case PF_OPT_DOUBLE:
    case PF_OPT_SIZE:
        if (pf_parse_double(val, o->lo, o->hi, &dv))
            return pf_errf(err, "--%s: want a number %s%s, got '%s'", o->name, range[0] == '>' ? ">= " : "in ", range + (range[0] == '>' ? 2 : 0),
                           val);
        if (o->type == PF_OPT_DOUBLE)
            *(double *)field = dv * scale_of(o);
        else
            *(size_t *)field = (size_t)(dv * scale_of(o));
        return 0;
    case PF_OPT_ENUM: {
        char want[160] = "";
        for (const pf_opt_choice *c = o->choices; c->name; c++) {
            if (!strcmp(c->name, val)) {
                *(int *)field = c->value;
                return 0;
            }
            size_t n = strlen(want);
            snprintf(want + n, sizeof want - n, "%s%s", n ? "|" : "", c->name);
        }
        return pf_errf(err, "--%s: want %s, got '%s'", o->name, want, val);
    }
    case PF_OPT_FUNC:
        return o->fn(o, field, val, err);
    case PF_OPT_HEADING:
        break;
    }
    return pf_errf(err, "--%s: not an option", o->name ? o->name : "?");
}

/* ---- parsing ---- */

/* getopt's tables for CMD: long options (rows, then the common ones; val ROW_BASE + i, common rows
 * ROW_BASE + n + j) and the short option string. */
static int build_getopt(const pf_optcmd *cmd, size_t n, struct option **out_long, char *shorts, size_t cap)
{
    struct option *lo = calloc(n + N_COMMON + 1, sizeof *lo);
    if (!lo)
        return -1;
    size_t k = 0, s = 0;
    shorts[s++] = ':';   /* a missing value reports ':', told apart from an unknown option */
    for (size_t i = 0; i < n + N_COMMON; i++) {
        const pf_opt *o = i < n ? &cmd->opts[i] : &g_common[i - n];
        if (o->type == PF_OPT_HEADING || (i >= n && !common_used(cmd, (int)(i - n))))
            continue;
        lo[k++] = (struct option){o->name, takes_value(o) ? required_argument : no_argument, NULL, ROW_BASE + (int)i};
        if (o->short_name && s + 3 < cap) {
            shorts[s++] = (char)o->short_name;
            if (takes_value(o))
                shorts[s++] = ':';
        }
    }
    shorts[s] = '\0';
    *out_long = lo;
    return 0;
}

static const pf_opt *row_of(const pf_optcmd *cmd, size_t n, int ch)
{
    if (ch >= ROW_BASE)
        return (size_t)(ch - ROW_BASE) < n ? &cmd->opts[ch - ROW_BASE] : &g_common[ch - ROW_BASE - (int)n];
    for (size_t i = 0; i < n; i++)
        if (cmd->opts[i].short_name == ch)
            return &cmd->opts[i];
    return ch == 'h' ? &g_common[COMMON_HELP] : NULL;
}

/* An argument that starts with one '-' and names an existing file: getopt read it as a cluster of short
 * options ("-leading-dash.png" is "-l ..."), where the user meant the file. */
static const char *dash_file(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (argv[i][0] == '-' && argv[i][1] && argv[i][1] != '-' && access(argv[i], F_OK) == 0)
            return argv[i];
    return NULL;
}

int pf_opt_parse_args(const pf_optcmd *cmd, void *obj, int argc, char **argv, int *first, pf_err *err)
{
    size_t n = n_rows(cmd);
    struct option *lo;
    char shorts[128];
    if (build_getopt(cmd, n, &lo, shorts, sizeof shorts))
        return pf_errf(err, "out of memory");
    int rc = 0, ch, idx;
    optind = 0;   /* a full reset: a reload parses again */
    opterr = 0;   /* our messages, in our format */
    while (rc == 0 && (ch = getopt_long(argc, argv, shorts, lo, &idx)) != -1) {
        const pf_opt *o = ch == '?' || ch == ':' ? NULL : row_of(cmd, n, ch);
        if (!o) {
            const char *arg = argv[optind - 1];
            if (ch == ':')
                rc = pf_errf(err, "option '%.200s' needs a value", arg);
            else if (optopt && optopt < ROW_BASE && !(arg[0] == '-' && arg[1] == '-')) {
                const char *file = dash_file(argc, argv);
                if (file)
                    rc = pf_errf(err, "unknown option '-%c' ('%.200s' is a file: write ./%.200s, or put -- before "
                                      "the file names)", optopt, file, file);
                else
                    rc = pf_errf(err, "unknown option '-%c'", optopt);
            } else
                rc = pf_errf(err, "unknown or ambiguous option '%.200s'", arg);
        } else if (o == &g_common[COMMON_HELP]) {
            rc = 1;
        } else if (o == &g_common[COMMON_CONFIG]) {
            /* main() or the command expanded every --config before parsing; one left here came from a file */
            rc = pf_errf(err, "--config inside a config file");
        } else {
            rc = set_field(o, obj, optarg, (size_t)argc, err);
        }
    }
    if (rc == 0 && !cmd->operands && optind < argc)
        rc = pf_errf(err, "unexpected argument '%.200s'", argv[optind]);
    if (first)
        *first = optind;
    free(lo);
    return rc;
}

int pf_opt_parse(const pf_optcmd *cmd, void *obj, int argc, char **argv, int *first, int quiet)
{
    pf_err err = {{0}};
    int rc = pf_opt_parse_args(cmd, obj, argc, argv, first, &err);
    if (rc == 1 && !quiet)
        pf_opt_help(cmd, stdout);
    if (rc >= 0)
        return rc;
    if (quiet) {   /* a reload: the reason goes to the log, where the failed reload is reported */
        pf_error("config", "%s", err.msg);
    } else {
        fprintf(stderr, "paliflow %s: %s\n", cmd->name, err.msg);
        fprintf(stderr, "Run 'paliflow %s --help' for the options.\n", cmd->name);
    }
    return 2;
}

void pf_opt_free(const pf_optcmd *cmd, void *obj)
{
    for (const pf_opt *o = cmd->opts; !is_end(o); o++)
        if (o->type == PF_OPT_LIST) {
            pf_opt_list *l = (pf_opt_list *)((char *)obj + o->offset);
            free(l->v);
            l->v = NULL;
            l->n = 0;
        }
}

void pf_opt_list_keep_last(pf_opt_list *l, size_t n)
{
    if (n && n < l->n) {
        memmove(l->v, l->v + (l->n - n), n * sizeof *l->v);
        l->n = n;
    }
}

/* ---- --help ---- */

/* Print TEXT from column COL on, wrapped before HELP_COLS, continuation lines indented to INDENT; a word
 * wider than the screen stays whole. USAGE: an option and its argument ("--model DIR", "[--prompt P ...]") are
 * one word, so a usage line never ends in an option whose argument starts the next line. */
static void wrap(FILE *out, const char *text, size_t n, int col, int indent, int usage)
{
    const char *p = text, *end = text + n;
    int fresh = 1;   /* nothing written on this line since COL */
    while (p < end) {
        while (p < end && *p == ' ')
            p++;
        size_t w = 0;
        while (p + w < end && p[w] != ' ')
            w++;
        if (!w)
            break;
        /* the option's (or redirection's) argument, upper case, and a "...": "[--prompt P ...]", "< ANSWERS" */
        while (usage && (p[0] == '-' || p[0] == '<' || (p[0] == '[' && p[1] == '-')) && p + w + 1 < end &&
               ((p[w + 1] >= 'A' && p[w + 1] <= 'Z') || p[w + 1] == '.')) {
            w++;
            while (p + w < end && p[w] != ' ')
                w++;
        }
        if (!fresh && col + 1 + (int)w >= HELP_COLS) {
            fprintf(out, "\n%*s", indent, "");
            col = indent;
        } else if (!fresh) {
            fputc(' ', out);
            col++;
        }
        fwrite(p, 1, w, out);
        col += (int)w;
        fresh = 0;
        p += w;
    }
    fputc('\n', out);
}

/* Print a synopsis or heading within 80 columns: consecutive lines of prose (not indented) are one
 * paragraph, re-wrapped; an indented line (an example, a list) is kept, wrapped to its own indentation
 * if it is too long; a "usage:" line continues under its command. */
static void fold(FILE *out, const char *text)
{
    while (*text) {
        size_t len = strcspn(text, "\n");
        if (!len) {
            fputc('\n', out);
        } else if (text[0] == ' ') {
            int indent = (int)strspn(text, " ");
            fprintf(out, "%*s", indent, "");
            wrap(out, text + indent, len - (size_t)indent, indent, indent + 2, 0);
        } else if (!strncmp(text, "usage:", 6)) {
            wrap(out, text, len, 0, 7, 1);
        } else {   /* prose: up to the next empty, indented or usage line */
            size_t n = len;
            while (text[n] == '\n' && text[n + 1] && text[n + 1] != '\n' && text[n + 1] != ' ' &&
                   strncmp(text + n + 1, "usage:", 6))
                n += 1 + strcspn(text + n + 1, "\n");
            char *para = strndup(text, n);
            if (para)
                for (char *q = para; *q; q++)
                    if (*q == '\n')
                        *q = ' ';
            wrap(out, para ? para : text, para ? n : len, 0, 0, 0);
            free(para);
            len = para ? n : len;
        }
        text += len;
        if (*text == '\n')
            text++;
    }
}

/* "(default X, range LO..HI)" or "(required)" for row O, the default read from DEFAULTS. */
static void row_notes(const pf_opt *o, const void *defaults, char *buf, size_t cap)
{
    char def[96] = "", range[80] = "";
    const void *field = defaults ? (const char *)defaults + o->offset : NULL;
    if (o->def) {
        snprintf(def, sizeof def, "%s", o->def);
    } else if (field && !(o->flags & PF_OPT_NO_DEFAULT)) {
        switch (o->type) {
        case PF_OPT_INT: snprintf(def, sizeof def, "%d", *(const int *)field); break;
        case PF_OPT_U64: snprintf(def, sizeof def, "%llu", (unsigned long long)*(const uint64_t *)field); break;
        case PF_OPT_DOUBLE: fmt_num(def, sizeof def, *(const double *)field / scale_of(o)); break;
        case PF_OPT_SIZE: fmt_num(def, sizeof def, (double)*(const size_t *)field / scale_of(o)); break;
        case PF_OPT_STR:
            if (*(const char *const *)field)
                snprintf(def, sizeof def, "%s", *(const char *const *)field);
            break;
        case PF_OPT_ENUM:
            for (const pf_opt_choice *c = o->choices; c->name; c++)
                if (c->value == *(const int *)field)
                    snprintf(def, sizeof def, "%s", c->name);
            break;
        default: break;
        }
    }
    if (o->type == PF_OPT_INT || o->type == PF_OPT_U64 || o->type == PF_OPT_DOUBLE || o->type == PF_OPT_SIZE) {
        range_text(o, range, sizeof range);
    } else if (o->type == PF_OPT_ENUM) {
        size_t n = 0;
        for (const pf_opt_choice *c = o->choices; c->name && n < sizeof range; c++)
            n += (size_t)snprintf(range + n, sizeof range - n, "%s%s", n ? " | " : "", c->name);
    }
    if (o->flags & PF_OPT_RELOAD) {
        size_t n = strlen(range);
        snprintf(range + n, sizeof range - n, "%sreloads", n ? ", " : "");
    }
    const char *req = o->flags & PF_OPT_REQUIRED ? "required" : "";
    snprintf(buf, cap, "%s%s%s%s%s%s%s%s", *req || *def || *range ? "(" : "", req, *req && (*def || *range) ? "; " : "",
             *def ? "default " : "", def, *def && *range ? ", " : "", range, *req || *def || *range ? ")" : "");
}

static void help_row(FILE *out, const pf_opt *o, const void *defaults)
{
    if (o->type == PF_OPT_HEADING) {
        fold(out, o->help);
        return;
    }
    if (o->flags & PF_OPT_HIDDEN)
        return;
    char head[96];
    int col;
    if (o->short_name)
        col = snprintf(head, sizeof head, "  -%c, --%s%s%s", o->short_name, o->name, o->arg ? " " : "",
                       o->arg ? o->arg : "");
    else
        col = snprintf(head, sizeof head, "  --%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
    fputs(head, out);
    if (col >= HELP_INDENT - 1) {
        fprintf(out, "\n%*s", HELP_INDENT, "");
        col = HELP_INDENT;
    } else {
        fprintf(out, "%*s", HELP_INDENT - col, "");
        col = HELP_INDENT;
    }
    char notes[256], text[1024];
    row_notes(o, defaults, notes, sizeof notes);
    snprintf(text, sizeof text, "%s%s%s", o->help ? o->help : "", *notes ? " " : "", notes);
    wrap(out, text, strlen(text), col, HELP_INDENT, 0);
}

void pf_opt_help(const pf_optcmd *cmd, FILE *out)
{
    void *defaults = cmd->size ? calloc(1, cmd->size) : NULL;
    if (defaults && cmd->init)
        cmd->init(defaults);
    fold(out, cmd->synopsis);
    for (const pf_opt *o = cmd->opts; !is_end(o); o++)
        help_row(out, o, defaults);
    int headed = 0;   /* after a table's heading, the common options need their own */
    for (const pf_opt *o = cmd->opts; !is_end(o); o++)
        headed |= o->type == PF_OPT_HEADING;
    if (headed)
        fputs("every command:\n", out);
    for (int i = 0; i < N_COMMON; i++)
        if (common_used(cmd, i))
            help_row(out, &g_common[i], NULL);
    if (cmd->epilog)
        fold(out, cmd->epilog);
    free(defaults);
}

/* ---- reload ---- */

/* The value of row O in OBJ in the option's unit, for comparing and logging; 0 when it has none. */
static int number_of(const pf_opt *o, const void *obj, double *v)
{
    const void *f = (const char *)obj + o->offset;
    switch (o->type) {
    case PF_OPT_FLAG:
    case PF_OPT_INT:
    case PF_OPT_ENUM: *v = *(const int *)f; return 1;
    case PF_OPT_U64: *v = (double)*(const uint64_t *)f; return 1;
    case PF_OPT_DOUBLE: *v = *(const double *)f / scale_of(o); return 1;
    case PF_OPT_SIZE: *v = (double)*(const size_t *)f / scale_of(o); return 1;
    default: return 0;
    }
}

static size_t field_size(const pf_opt *o)
{
    switch (o->type) {
    case PF_OPT_U64: return sizeof(uint64_t);
    case PF_OPT_DOUBLE: return sizeof(double);
    case PF_OPT_SIZE: return sizeof(size_t);
    default: return sizeof(int);
    }
}

int pf_opt_reload(const pf_optcmd *cmd, void *live, const void *fresh)
{
    int applied = 0;
    for (const pf_opt *o = cmd->opts; !is_end(o); o++) {
        if (o->type == PF_OPT_HEADING || o->type == PF_OPT_LIST || o->type == PF_OPT_FUNC ||
            (o->flags & PF_OPT_RESTART_QUIET))
            continue;
        double before = 0, after = 0;   /* number_of fills both for every numeric row; GCC cannot see it */
        int changed;
        if (o->type == PF_OPT_STR) {
            const char *a = *(const char *const *)((const char *)live + o->offset);
            const char *b = *(const char *const *)((const char *)fresh + o->offset);
            changed = (a == NULL) != (b == NULL) || (a && strcmp(a, b));
        } else {
            number_of(o, live, &before);
            number_of(o, fresh, &after);
            changed = before != after;
        }
        if (!changed)
            continue;
        /* strings point into the re-read command line, which a reload frees: never copied */
        if ((o->flags & PF_OPT_RELOAD) && o->type != PF_OPT_STR) {
            char b[32], a[32];
            fmt_num(b, sizeof b, before);
            fmt_num(a, sizeof a, after);
            pf_info("config", "reload: %s %s -> %s", o->name, b, a);
            memcpy((char *)live + o->offset, (const char *)fresh + o->offset, field_size(o));
            applied++;
        } else {
            pf_warn("config", "reload: --%s changed: restart the %s to apply", o->name, cmd->name);
        }
    }
    return applied;
}
