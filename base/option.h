/* option.h - option values, shared by every command and library that takes options: strict number parsing
 * and the number-option step of an option handler.
 *
 * An option handler takes one option at a time, `int f(const char *name, const char *val, ..., pf_err *err)`
 * with NAME the long option without its dashes, and returns 1 when it took the option, 0 when the option is
 * not one of its own, -1 on a bad value (err says why). Commands chain handlers (pf_task_option,
 * pf_service_option, pf_worker_option, their own).
 */
#ifndef PF_BASE_OPTION_H
#define PF_BASE_OPTION_H

#include <string.h>

#include "base/err.h"

/* Strict number parsing: the whole string, finite, within [lo, hi]. 0 ok, -1 not. */
int pf_parse_int(const char *s, long long lo, long long hi, long long *out);
int pf_parse_double(const char *s, double lo, double hi, double *out);

/* Inside an option handler (uses its `name`, `val` and `err`): when NAME is OPT, parse VAL as a number in
 * [LO, HI] into the double V, then run SET and return 1; a bad value returns -1 with
 * "--OPT: want a number in [LO, HI], got 'VAL'". */
#define PF_NUM_OPTION(opt, lo, hi, v, set)                                                                        \
    if (!strcmp(name, opt)) {                                                                                      \
        if (pf_parse_double(val, lo, hi, &(v)))                                                                    \
            return pf_errf(err, "--%s: want a number in [%g, %g], got '%s'", opt, (double)(lo), (double)(hi), val); \
        set;                                                                                                       \
        return 1;                                                                                                  \
    }

#endif
