/* manifest.h - a job's items from a manifest file: one item per line, each with its own prompt, generation
 * settings, id and any other columns the user keeps with it.
 *
 * Formats (chosen by the extension .jsonl/.ndjson/.json, .csv, .tsv/.tab; otherwise by the first byte: '{'
 * JSONL, else CSV or TSV by whether the header line holds a tab):
 *   JSONL  {"path": "a.jpg", "prompt": "answer en what is this?", "id": 7, "max_new_tokens": 20, "split": "val"}
 *          "prompt" (or "task") may be a list of prompts: one item per prompt.
 *   CSV    RFC 4180 (quoted fields may hold commas, quotes as "", newlines), a header row naming the columns.
 *   TSV    a header row; fields split at tabs, no quoting.
 * Columns: path (required), prompt or task, max_new_tokens, temperature, top_k, top_p, seed, id. Every
 * other column is kept, unchanged, for the record's "extra" object. A relative path is relative to the
 * manifest's folder (a manifest travels with its images). An empty cell counts as absent.
 *
 * A bad line (not JSON, wrong number of fields, an unterminated quote, a bad number, no path, not UTF-8, over
 * PF_MANIFEST_MAX_LINE bytes) is reported with the file and line and skipped: the rest of the manifest still
 * becomes items. Only a read error or a bad header ends the reading. */
#ifndef PF_PIPELINE_MANIFEST_H
#define PF_PIPELINE_MANIFEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "base/err.h"

#define PF_MANIFEST_MAX_LINE (1u << 20)   /* bytes per line (CSV: per record); longer lines are refused */
#define PF_MANIFEST_MAX_COLUMNS 1024
#define PF_MANIFEST_MAX_PROMPTS 64        /* prompts in one JSONL line's list */

typedef enum pf_manifest_format { PF_MANIFEST_AUTO, PF_MANIFEST_JSONL, PF_MANIFEST_CSV, PF_MANIFEST_TSV } pf_manifest_format;

/* Generation settings a line may set; has_* says which it did (the others stay the job's). */
typedef struct pf_manifest_settings {
    int has_max_new_tokens, has_temperature, has_top_k, has_top_p, has_seed;
    int32_t max_new_tokens;
    double temperature, top_p;
    int32_t top_k;
    uint64_t seed;
} pf_manifest_settings;

/* One line's item; every pointer is valid until the next pf_manifest_next. */
typedef struct pf_manifest_item {
    size_t line;                 /* 1-based line where the item starts */
    const char *path;            /* resolved against the manifest's folder */
    const char *const *prompts;  /* n_prompts = 0: the job's task(s) */
    size_t n_prompts;
    pf_manifest_settings set;
    /* The record's additions, as compact JSON text: {"id": <id>, "extra": {<other columns>}}, each part only
     * when present; NULL when neither is. */
    const char *meta;
} pf_manifest_item;

typedef struct pf_manifest pf_manifest;

/* Open PATH ("-" is not allowed: the job store keeps the name to resume). Reads the header row of CSV/TSV. */
int pf_manifest_open(const char *path, pf_manifest_format fmt, pf_manifest **out, pf_err *err);
/* The same on a stream (not closed by pf_manifest_close); NAME is used in messages and DIR resolves relative
 * paths (NULL: as given). For tests and the fuzzer. */
int pf_manifest_open_stream(FILE *f, const char *name, const char *dir, pf_manifest_format fmt, pf_manifest **out,
                            pf_err *err);
/* 1: *it is the next item; 0: end of the manifest; -1: read error (err). Bad lines are logged as warnings
 * ("FILE:LINE: reason (line skipped)") and counted, and reading goes on. */
int pf_manifest_next(pf_manifest *m, pf_manifest_item *it, pf_err *err);
size_t pf_manifest_bad_lines(const pf_manifest *m);
size_t pf_manifest_items(const pf_manifest *m);
/* The last bad line's reason ("FILE:LINE: ..."), "" when none: for tests. */
const char *pf_manifest_last_error(const pf_manifest *m);
void pf_manifest_close(pf_manifest *m);

#endif
