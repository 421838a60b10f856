/* scan.h - enumerate a job's input files: folders (recursive, sorted, include/exclude globs, symlinked
 * directories followed once: (dev, inode) of every directory is remembered, so links cannot loop), single
 * files, and list files (one path per line, "-" = stdin).
 *
 * Every entry found is returned, including ones that cannot be read (broken links, fifos): the producer
 * turns those into error records, so every file gets exactly one record. Paths are returned as found:
 * ROOT joined with the relative path ("imgs" + "a/b.jpg" -> "imgs/a/b.jpg").
 *
 * Globs (fnmatch) are matched case-insensitively, the whole glob (FNM_CASEFOLD): "*.jpg" takes IMG_1.JPG,
 * "Thumbs" skips a folder "thumbs". Extensions come in any case, and a case-sensitive filter dropped files
 * without a word. When the walk is complete, one info line says how many files were taken and how many
 * each filter skipped (pf_scan_summary).
 *
 * Hidden files and folders met in folders are skipped by default (macOS' .DS_Store and ._* files are not
 * images; .git is not data); a file named explicitly (root or list line) is always taken.
 */
#ifndef PF_PIPELINE_SCAN_H
#define PF_PIPELINE_SCAN_H

#include <stddef.h>

#include "base/err.h"

typedef struct pf_scan_params {
    const char *const *roots;     /* files or folders */
    size_t n_roots;
    const char *list_file;        /* optional */
    const char *const *include;   /* globs on the file name or the path below the root; none = every file */
    size_t n_include;
    const char *const *exclude;   /* globs on file or folder names / paths below the root */
    size_t n_exclude;
    int include_hidden;           /* 0: entries of folders named ".*" (.DS_Store, .git/) are skipped and counted */
} pf_scan_params;

typedef struct pf_scan pf_scan;

/* Checks that every root exists (a missing root is a setup error). */
int pf_scan_open(const pf_scan_params *opts, pf_scan **out, pf_err *err);
/* 1: *path is the next entry (valid until the next call); 0: done; -1: fatal error. */
int pf_scan_next(pf_scan *s, const char **path, pf_err *err);
/* Hidden entries skipped so far (a hidden folder counts once; its contents are never listed). */
size_t pf_scan_hidden_skipped(const pf_scan *s);
void pf_scan_close(pf_scan *s);

/* What the scan did so far: entries returned; files that matched no include glob; files and folders skipped
 * by exclude glob I (a skipped folder counts once: its contents are never listed). */
size_t pf_scan_found(const pf_scan *s);
size_t pf_scan_not_included(const pf_scan *s);
size_t pf_scan_excluded_files(const pf_scan *s, size_t i);
size_t pf_scan_excluded_dirs(const pf_scan *s, size_t i);
/* The summary line, e.g. "184 files taken; skipped: 118 matching no include glob (*.jpg *.png), 3 files and
 * 1 folder by exclude 'tmp' (globs match case-insensitively)"; truncated to CAP. */
void pf_scan_summary(const pf_scan *s, char *buf, size_t cap);

#endif
