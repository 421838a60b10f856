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
    char old[PF_ERR_MAX];
    memcpy(old, err->msg, sizeof old);
    /* Built by hand: snprintf("%s: %s") of two full buffers trips -Werror=format-truncation. */
    size_t k = strlen(ctx);
    memcpy(err->msg, ctx, k + 1);
    if (k + 2 < sizeof err->msg) {
        memcpy(err->msg + k, ": ", 3);
        k += 2;
        size_t rest = strnlen(old, sizeof old);
        if (rest > sizeof err->msg - 1 - k)
            rest = sizeof err->msg - 1 - k;
        memcpy(err->msg + k, old, rest);
        err->msg[k + rest] = '\0';
    }
    return -1;
}

int pf_err_errno(pf_err *err, const char *what, int errnum)
{
    return pf_errf(err, "%s: %s", what, strerror(errnum));
}
