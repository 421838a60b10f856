/* cli_options.c - see cli_options.h. */
#include "cli/cli_options.h"

_Static_assert(sizeof(int32_t) == sizeof(int), "INT rows store pf_task's int32_t fields");

const pf_opt_choice cli_progress_choices[] = {{"auto", -1}, {"bar", 2}, {"lines", 1}, {"off", 0}, {NULL, 0}};

int cli_backend_opt(const pf_opt *opt, void *session, const char *val, pf_err *err)
{
    (void)opt;
    pf_session_params *s = session;
    return pf_backend_parse(val, &s->backend, err) ? -1 : 0;
}

int cli_precision_opt(const pf_opt *opt, void *session, const char *val, pf_err *err)
{
    (void)opt;
    pf_session_params *s = session;
    if (pf_precision_parse(val, &s->precision, err))
        return -1;
    /* AUTO in the struct otherwise means "the default" (fp32): only the user's "auto" asks for the best */
    s->auto_ok = s->precision == PF_PREC_AUTO;
    return 0;
}
