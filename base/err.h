/* err.h - the project's error convention.
 *
 * Every function that can fail returns int: 0 on success, -1 on failure, and on failure fills a
 * caller-provided pf_err with one line that names the file, tensor or field at fault and the reason,
 * e.g. "model/config.json: text_config.num_attention_heads: must be >= 1, got 0".
 * Callers add context on the way up with pf_err_prefix() ("checkpoint DIR: ...").
 */
#ifndef PF_BASE_ERR_H
#define PF_BASE_ERR_H

#include <stddef.h>

#define PF_ERR_MAX 1024

typedef struct pf_err {
    char msg[PF_ERR_MAX];
} pf_err;

/* Set the message (printf-style) and return -1, so that `return pf_errf(err, ...)` reads naturally.
 * err may be NULL (the message is dropped). */
int pf_errf(pf_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepend context to an existing message: "<context>: <old message>". Returns -1. */
int pf_err_prefix(pf_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Append strerror(errnum) style reasons: pf_errf(err, "%s: %s", path, strerror(errno)) is the idiom;
 * this helper is for the common "open failed" case and returns -1. */
int pf_err_errno(pf_err *err, const char *what, int errnum);

#endif
