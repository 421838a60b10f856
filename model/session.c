/* session.c - model + backend + generator, chosen at run time (see session.h). */
#include "model/session.h"

#include <string.h>

#include "base/log.h"

int pf_backend_parse(const char *s, pf_backend_kind *out, pf_err *err)
{
    if (!strcmp(s, "engine"))
        *out = PF_BACKEND_ENGINE;
    else if (!strcmp(s, "reference") || !strcmp(s, "ref"))
        *out = PF_BACKEND_REFERENCE;
    else
        return pf_errf(err, "backend '%s': want engine or reference", s);
    return 0;
}

const char *pf_backend_name(pf_backend_kind b) { return b == PF_BACKEND_REFERENCE ? "reference" : "engine"; }

int pf_session_open(const char *dir, const pf_session_opts *o, pf_session *s, pf_err *err)
{
    memset(s, 0, sizeof *s);
    pf_session_opts opt = {0};
    if (o)
        opt = *o;
    if (opt.backend == PF_BACKEND_REFERENCE && opt.precision != PF_PREC_AUTO && opt.precision != PF_PREC_FP32)
        return pf_errf(err, "the reference backend computes in fp32 only (asked for %s)",
                       pf_precision_name(opt.precision));
    pf_precision prec = opt.precision == PF_PREC_AUTO && !opt.auto_ok ? PF_PREC_FP32 : opt.precision;
    unsigned flags = opt.backend == PF_BACKEND_ENGINE ? PF_MODEL_STORED_ONLY : 0;
    if (pf_model_load_flags(dir, flags, &s->model, err) != 0)
        return -1;
    pf_generator_options go = {.max_active = opt.max_active};
    if (opt.backend == PF_BACKEND_ENGINE) {
        pf_engine_options eo = {.precision = prec, .threads = opt.threads};
        if (pf_engine_create(s->model, &eo, &s->engine, err) != 0) {
            pf_session_close(s);
            return -1;
        }
        go.backend = &pf_gen_backend_engine;
        go.backend_arg = s->engine;
        s->precision = pf_engine_precision(s->engine);
    } else {
        s->precision = PF_PREC_FP32;
    }
    if (pf_generator_create_opts(s->model, &go, &s->gen, err) != 0) {
        pf_session_close(s);
        return -1;
    }
    pf_info("session", "%s: backend %s, precision %s", dir, pf_backend_name(opt.backend),
            pf_precision_name(s->precision));
    return 0;
}

void pf_session_close(pf_session *s)
{
    pf_generator_free(s->gen);
    pf_engine_free(s->engine);
    pf_model_free(s->model);
    memset(s, 0, sizeof *s);
}
