#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "workers/worker.h"

static int parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = s && *s ? strtod(s, &end) : NAN;
    if (!s || !*s || errno || *end || !isfinite(v) || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int pf_worker_option(const char *name, const char *val, pf_worker_opts *o, pf_err *err)
{
    double v;
#define NUM(opt, lo, hi, dst)                                                                                      \
    if (!strcmp(name, opt)) {                                                                                      \
        if (parse_double(val, lo, hi, &v))                                                                      \
            return pf_errf(err, "--%s: want a number in [%g, %g], got '%s'", opt, (double)(lo), (double)(hi), val); \
        dst;                                                                                                       \
        return 1;                                                                                                  \
    }
    if (!strcmp(name, "producer")) {
        o->producer = val;
        return 1;
    }
    if (!strcmp(name, "sink")) {
        o->sink = val;
        return 1;
    }
    if (!strcmp(name, "name")) {
        if (!*val || strlen(val) > 100)
            return pf_errf(err, "--name: want 1 to 100 characters");
        o->name = val;
        return 1;
    }
    if (!strcmp(name, "exit-when-done")) {
        o->exit_when_done = 1;
        return 1;
    }
    NUM("threads", 1, 1024, o->threads = (int)v)
    NUM("credit", 1, 1 << 16, o->capacity = (int)v)
    NUM("max-batch", 1, 4096, o->max_batch = (int)v)
    NUM("max-delay-ms", 0, 600000, o->max_delay_ms = (int)v)
    NUM("heartbeat", 0.01, 3600, o->hb_interval = v)
    NUM("heartbeat-timeout", 0.05, 1e6, o->hb_timeout = v)
    NUM("drain-timeout", 0, 1e6, o->drain_timeout = v)
    NUM("max-message-mb", 1, 4096, o->lim.max_msg_bytes = o->lim.max_bin = (size_t)(v * 1048576))
#undef NUM
    return 0;
}
