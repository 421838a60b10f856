/* worker_opts.c - pf_worker_option: the options every worker command shares (see worker.h). */
#include <string.h>

#include "base/option.h"
#include "workers/worker.h"

int pf_worker_option(const char *name, const char *val, pf_worker_params *o, pf_err *err)
{
    double v;
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
    PF_NUM_OPTION("threads", 1, 1024, v, o->threads = (int)v)
    PF_NUM_OPTION("credit", 1, 1 << 16, v, o->capacity = (int)v)
    PF_NUM_OPTION("max-batch", 1, 4096, v, o->max_batch = (int)v)
    PF_NUM_OPTION("max-delay-ms", 0, 600000, v, o->max_delay_ms = (int)v)
    PF_NUM_OPTION("heartbeat", 0.01, 3600, v, o->hb_interval = v)
    PF_NUM_OPTION("heartbeat-timeout", 0.05, 1e6, v, o->hb_timeout = v)
    PF_NUM_OPTION("drain-timeout", 0, 1e6, v, o->drain_timeout = v)
    PF_NUM_OPTION("max-message-mb", 1, 4096, v, o->lim.max_msg_bytes = o->lim.max_bin = (size_t)(v * 1048576))
    return 0;
}
