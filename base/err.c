#include "base/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int pf_errf(pf_err *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return -1;
}

int pf_err_prefix(pf_err *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char ctx[PF_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    /* Compose in a buffer big enough for both parts, then truncate into msg. */
    char both[2 * PF_ERR_MAX + 2];
    size_t cl = strnlen(ctx, PF_ERR_MAX), ol = strnlen(err->msg, PF_ERR_MAX);
    memcpy(both, ctx, cl);
    both[cl] = ':';
    both[cl + 1] = ' ';
    memcpy(both + cl + 2, err->msg, ol);
    both[cl + 2 + ol] = '\0';
    size_t n = cl + 2 + ol < PF_ERR_MAX - 1 ? cl + 2 + ol : PF_ERR_MAX - 1;
    memcpy(err->msg, both, n);
    err->msg[n] = '\0';
    return -1;
}

int pf_err_errno(pf_err *err, const char *what, int errnum)
{
    return pf_errf(err, "%s: %s", what, strerror(errnum));
}
