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
    snprintf(err->msg, sizeof err->msg, "%s: %s", ctx, old);
    return -1;
}

int pf_err_errno(pf_err *err, const char *what, int errnum)
{
    return pf_errf(err, "%s: %s", what, strerror(errnum));
}
