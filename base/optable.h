/* optable.h - a command's options as one table, the way redis' config.c describes its settings.
 *
 * Each row names an option once: its long and short name, type, range, the field it sets (an offset into
 * the command's struct), whether a SIGHUP reload may change it while running, and its help text. The rows
 * then drive everything that used to be written out per option:
 *   - parsing (getopt_long over the table; numbers strictly, with pf_parse_int / pf_parse_double);
 *   - the --config FILE lines, which are the same options (base/config_file.h expands them into argv);
 *   - --help, with each option's default read from a freshly initialised struct (so the default is written
 *     once, in the command's pf_<x>_default_params(), and help cannot disagree with it) and its range;
 *   - reloads: pf_opt_reload copies the reloadable rows from a re-parsed struct into the live one and logs
 *     each change, and warns about changed rows that need a restart.
 * A command keeps its own checks that span options (required combinations, --task needing --image-size).
 *
 * Shared rows (generation settings, security, engine) are macros of rows taking the path of their
 * sub-struct, so each command still has exactly one flat table that also fixes the --help order.
 */
#ifndef PF_BASE_OPTABLE_H
#define PF_BASE_OPTABLE_H

#include <stddef.h>
#include <stdio.h>

#include "base/err.h"

typedef enum pf_opt_type {
    PF_OPT_HEADING,  /* not an option: a heading line in --help (help = its text) */
    PF_OPT_FLAG,     /* no value; int field set to 1 (0 with PF_OPT_CLEAR) */
    PF_OPT_STR,      /* const char * field, pointing into argv */
    PF_OPT_INT,      /* int field, integer in [lo, hi] */
    PF_OPT_U64,      /* uint64_t field, integer in [lo, hi] (hi at most INT64_MAX) */
    PF_OPT_DOUBLE,   /* double field = number in [lo, hi] x scale (the option's unit to the field's) */
    PF_OPT_SIZE,     /* size_t field = number in [lo, hi] x scale (e.g. MB to bytes) */
    PF_OPT_ENUM,     /* int field = the value of the named choice */
    PF_OPT_LIST,     /* repeatable: appends the value to a pf_opt_list field */
    PF_OPT_FUNC,     /* fn parses the value into the field */
} pf_opt_type;

enum {
    PF_OPT_RELOAD = 1u << 0,     /* a SIGHUP reload applies it while running (numbers, flags, choices) */
    PF_OPT_NONEMPTY = 1u << 1,   /* STR, LIST: an empty value is refused */
    PF_OPT_CLEAR = 1u << 2,      /* FLAG: sets the field to 0 (--no-fsync) */
    PF_OPT_NO_DEFAULT = 1u << 3, /* --help shows no default (a path, or a zero that means "none") */
    PF_OPT_REQUIRED = 1u << 4,   /* --help says "(required)"; the command checks it (some are required only
                                    in some modes) */
    PF_OPT_HIDDEN = 1u << 5,     /* accepted, not in --help */
    PF_OPT_RESTART_QUIET = 1u << 6, /* reload: the command handles a change itself (no restart warning) */
};

typedef struct pf_opt_choice {
    const char *name;
    int value;
} pf_opt_choice;

/* A repeatable option's values, in command-line order (config file's first). */
typedef struct pf_opt_list {
    const char **v;
    size_t n;
} pf_opt_list;

typedef struct pf_opt pf_opt;
/* FUNC rows: parse VAL (NULL for a FUNC row without an argument) into FIELD. 0 ok, -1 bad (err says why,
 * starting with "--NAME: "). */
typedef int (*pf_opt_fn)(const pf_opt *opt, void *field, const char *val, pf_err *err);

struct pf_opt {
    const char *name;               /* long option, without the dashes */
    int short_name;                 /* 'j' for -j, or 0 */
    pf_opt_type type;
    size_t offset;                  /* the field: offsetof(command struct, path) */
    double lo, hi;                  /* INT, U64, DOUBLE, SIZE: the range, in the option's unit */
    double scale;                   /* DOUBLE, SIZE: field = value x scale (0 means 1) */
    const pf_opt_choice *choices;   /* ENUM: ends with a NULL name */
    pf_opt_fn fn;                   /* FUNC: parses and stores; other types: called after the store (VAL
                                       parsed), to check it further or derive another field from it */
    unsigned flags;
    const char *arg;                /* the value's name in --help ("N", "FILE"); NULL: the option takes none */
    const char *help;               /* one paragraph, wrapped to 80 columns by --help */
    const char *def;                /* the default as --help says it, when the field cannot ("all cores") */
};

/* A command: its table and what --help prints around it. */
typedef struct pf_optcmd {
    const char *name;               /* "producer": messages are "paliflow producer: ..." */
    const char *synopsis;           /* the text before the options, starting "usage: paliflow NAME ..." */
    const char *epilog;             /* after the options, or NULL */
    const pf_opt *opts;             /* ends with a row whose type is 0 and name NULL: PF_OPT_END */
    size_t size;                    /* sizeof the command's struct */
    void (*init)(void *obj);        /* fill it with the defaults (for parsing and for --help) */
    int operands;                   /* 0: arguments other than options are an error */
} pf_optcmd;

/* ---- rows ---- (T the command's struct, F the field's path in it) */
#define PF_OPT_END {0}
#define PF_OPT_ROW_HEADING(TEXT) {.type = PF_OPT_HEADING, .help = (TEXT)}
#define PF_OPT_ROW_FLAG(NAME, T, F, FL, HELP) {(NAME), 0, PF_OPT_FLAG, offsetof(T, F), .flags = (FL), .help = (HELP)}
#define PF_OPT_ROW_STR(NAME, T, F, FL, ARG, HELP)                                                                  \
    {(NAME), 0, PF_OPT_STR, offsetof(T, F), .flags = (FL), .arg = (ARG), .help = (HELP)}
#define PF_OPT_ROW_LIST(NAME, T, F, ARG, HELP)                                                                     \
    {(NAME), 0, PF_OPT_LIST, offsetof(T, F), .flags = PF_OPT_NONEMPTY, .arg = (ARG), .help = (HELP)}
#define PF_OPT_ROW_INT(NAME, T, F, LO, HI, FL, ARG, HELP)                                                          \
    {(NAME), 0, PF_OPT_INT, offsetof(T, F), (double)(LO), (double)(HI), .flags = (FL), .arg = (ARG), .help = (HELP)}
#define PF_OPT_ROW_U64(NAME, T, F, LO, HI, FL, ARG, HELP)                                                          \
    {(NAME), 0, PF_OPT_U64, offsetof(T, F), (double)(LO), (double)(HI), .flags = (FL), .arg = (ARG), .help = (HELP)}
#define PF_OPT_ROW_DOUBLE(NAME, T, F, LO, HI, FL, ARG, HELP)                                                       \
    {(NAME), 0, PF_OPT_DOUBLE, offsetof(T, F), (double)(LO), (double)(HI), .flags = (FL), .arg = (ARG), .help = (HELP)}
#define PF_OPT_ROW_ENUM(NAME, T, F, CHOICES, FL, ARG, HELP)                                                        \
    {(NAME), 0, PF_OPT_ENUM, offsetof(T, F), .choices = (CHOICES), .flags = (FL), .arg = (ARG), .help = (HELP)}
#define PF_OPT_ROW_FUNC(NAME, T, F, FN, FL, ARG, HELP)                                                             \
    {(NAME), 0, PF_OPT_FUNC, offsetof(T, F), .fn = (FN), .flags = (FL), .arg = (ARG), .help = (HELP)}

/* Parse ARGV (argv[0] is the command's name; --config already expanded: base/config_file.h) into OBJ, which
 * the caller initialised (cmd->init). --help/-h, --log-level LEVEL and --config FILE are every command's (the
 * table need not list them). Operands stay at argv[*first...]. Returns 0 parsed, 1 --help was asked for,
 * -1 a bad option (ERR names it: "--max-attempts: want an integer in 1..1000, got '0'"). OBJ may be
 * partly filled on error. */
int pf_opt_parse_args(const pf_optcmd *cmd, void *obj, int argc, char **argv, int *first, pf_err *err);

/* pf_opt_parse_args for a command: --help printed to stdout (returns 1), a bad option printed as "paliflow
 * NAME: reason" and where to find help (returns 2; with QUIET, as in a reload, the reason is logged
 * instead). 0 parsed. */
int pf_opt_parse(const pf_optcmd *cmd, void *obj, int argc, char **argv, int *first, int quiet);

/* The --help text: synopsis, every row (with its default from a fresh cmd->init struct, and its range),
 * the common options, the epilog. Wrapped to 80 columns. */
void pf_opt_help(const pf_optcmd *cmd, FILE *out);

/* Free what pf_opt_parse allocated in OBJ (the LIST arrays). */
void pf_opt_free(const pf_optcmd *cmd, void *obj);

/* A reload: for every PF_OPT_RELOAD row whose value differs between LIVE and FRESH (both parsed from the
 * same table), log "reload: NAME before -> after" and copy it into LIVE; for any other row that changed
 * (except lists, FUNC rows and PF_OPT_RESTART_QUIET), warn that it needs a restart. Returns how many rows
 * were applied. */
int pf_opt_reload(const pf_optcmd *cmd, void *live, const void *fresh);

/* The FUNC of the common --log-level row, for a table that gives its own (another default in --help). */
int pf_opt_log_level(const pf_opt *opt, void *field, const char *val, pf_err *err);

/* The row for NAME in CMD, or NULL. */
const pf_opt *pf_opt_find(const pf_optcmd *cmd, const char *name);

/* Keep only the last N values of a list (a repeatable option given N times on the command line replaces
 * the config file's values, which come first, instead of adding to them). */
void pf_opt_list_keep_last(pf_opt_list *l, size_t n);

#endif
