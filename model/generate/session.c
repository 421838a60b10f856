/* session.c - model + backend + generator, chosen at run time (see session.h). */
#include "model/generate/session.h"

#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "base/log.h"
#include "model/generate/memory.h"

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

/* The memory check before loading (memory.h), on config.json alone. auto is resolved here (the same answer
 * pf_engine_create would reach: the probe runs once per process) so that, when its choice does not fit, a
 * smaller precision this CPU runs can be taken instead. */
static int memory_check(const char *dir, int reference, pf_precision *prec, pf_err *err)
{
    char *path = pf_path_join(dir, "config.json");
    pf_config cfg;
    if (!path)
        return pf_errf(err, "out of memory");
    int rc = pf_config_load(path, &cfg, err);
    free(path);
    if (rc != 0)
        return pf_err_prefix(err, "checkpoint %s", dir);
    pf_precision p = *prec;
    if (!reference && p == PF_PREC_AUTO && pf_precision_resolve(PF_PREC_AUTO, &p, err) != 0)
        return -1;
    if (pf_mem_check(&cfg, p, reference, err) == 0) {
        if (*prec == PF_PREC_AUTO)
            *prec = p;
        return 0;
    }
    if (*prec == PF_PREC_AUTO) {
        pf_err e2;
        for (int q = p + 1; q < PF_PREC_COUNT; q++) { /* bf16, int8: each half the bytes of the one before */
            pf_precision r;
            if (pf_precision_resolve((pf_precision)q, &r, &e2) == 0 && pf_mem_check(&cfg, r, 0, &e2) == 0) {
                pf_warn("session", "%s: precision auto: %s does not fit the memory budget, using %s", dir,
                        pf_precision_name(p), pf_precision_name(r));
                *prec = r;
                return 0;
            }
        }
    }
    return pf_err_prefix(err, "checkpoint %s", dir);
}

int pf_session_open(const char *dir, const pf_session_params *o, pf_session *s, pf_err *err)
{
    memset(s, 0, sizeof *s);
    pf_session_params opt = {0};
    if (o)
        opt = *o;
    if (opt.backend == PF_BACKEND_REFERENCE && opt.precision != PF_PREC_AUTO && opt.precision != PF_PREC_FP32)
        return pf_errf(err, "the reference backend computes in fp32 only (asked for %s)",
                       pf_precision_name(opt.precision));
    pf_precision prec = opt.precision == PF_PREC_AUTO && !opt.auto_ok ? PF_PREC_FP32 : opt.precision;
    if (!opt.no_memory_check && memory_check(dir, opt.backend == PF_BACKEND_REFERENCE, &prec, err) != 0)
        return -1;
    unsigned flags = opt.backend == PF_BACKEND_ENGINE ? PF_MODEL_STORED_ONLY : 0;
    if (pf_model_load_adapter(dir, opt.adapter, flags, &s->model, err) != 0)
        return -1;
    pf_generator_params go = {.max_active = opt.max_active};
    if (opt.backend == PF_BACKEND_ENGINE) {
        pf_engine_params eo = {.precision = prec, .threads = opt.threads};
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
    if (pf_generator_create_params(s->model, &go, &s->gen, err) != 0) {
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
