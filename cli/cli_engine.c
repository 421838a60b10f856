#include "cli/cli_engine.h"

#include <stdlib.h>
#include <string.h>

int cli_engine_option(const char *name, const char *val, pf_session_params *o, pf_err *err)
{
    if (!strcmp(name, "backend"))
        return pf_backend_parse(val, &o->backend, err) ? -1 : 1;
    if (!strcmp(name, "precision")) {
        if (pf_precision_parse(val, &o->precision, err) != 0)
            return -1;
        o->auto_ok = o->precision == PF_PREC_AUTO;
        return 1;
    }
    if (!strcmp(name, "no-memory-check")) {
        o->no_memory_check = 1;
        return 1;
    }
    if (!strcmp(name, "adapter")) {
        if (!val || !*val)
            return pf_errf(err, "--adapter: want a folder");
        o->adapter = val;
        return 1;
    }
    if (!strcmp(name, "threads")) {
        char *end;
        long n = strtol(val, &end, 10);
        if (*end || n < 1 || n > 4096)
            return pf_errf(err, "--threads: want an integer in [1, 4096], got '%s'", val);
        o->threads = (int)n;
        return 1;
    }
    return 0;
}
