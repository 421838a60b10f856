/* dnnl_util.c - see dnnl_util.h. */
#include "model/linear/dnnl_util.h"

#include <pthread.h>
#include <string.h>

static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;
static dnnl_engine_t g_engine;
static dnnl_status_t g_engine_status;

static void engine_init(void)
{
    (void)pf_cpu(); /* apply PALIFLOW_MAX_ISA before oneDNN does anything */
    g_engine_status = dnnl_engine_create(&g_engine, dnnl_cpu, 0);
}

dnnl_engine_t pf_dnnl_engine(pf_err *err)
{
    pthread_once(&g_engine_once, engine_init);
    if (g_engine_status != dnnl_success) {
        pf_errf(err, "oneDNN: cannot create the CPU engine: %s", pf_dnnl_status_name(g_engine_status));
        return NULL;
    }
    return g_engine;
}

const char *pf_dnnl_status_name(dnnl_status_t s)
{
    switch (s) {
    case dnnl_success: return "success";
    case dnnl_out_of_memory: return "out of memory";
    case dnnl_invalid_arguments: return "invalid arguments";
    case dnnl_unimplemented: return "unimplemented";
    case dnnl_iterator_ends: return "iterator ends";
    case dnnl_runtime_error: return "runtime error";
    case dnnl_not_required: return "not required";
    default: return "unknown status";
    }
}

static dnnl_status_t set_post_ops(dnnl_primitive_attr_t attr, const pf_dnnl_mm *mm)
{
    dnnl_post_ops_t po;
    dnnl_status_t s = dnnl_post_ops_create(&po);
    if (s != dnnl_success)
        return s;
    if (s == dnnl_success && mm->accumulate)
        s = dnnl_post_ops_append_sum(po, 1.0f);
    if (s == dnnl_success && dnnl_post_ops_len(po) > 0)
        s = dnnl_primitive_attr_set_post_ops(attr, po);
    dnnl_post_ops_destroy(po);
    return s;
}

dnnl_status_t pf_dnnl_matmul_pd(const pf_dnnl_mm *mm, dnnl_primitive_desc_t *pd)
{
    dnnl_engine_t eng = pf_dnnl_engine(NULL);
    if (!eng)
        return dnnl_runtime_error;
    bool int8 = mm->prec == PF_PREC_INT8;
    dnnl_data_type_t xdt = mm->prec == PF_PREC_BF16 ? dnnl_bf16 : int8 ? dnnl_u8 : dnnl_f32;
    dnnl_data_type_t wdt = mm->prec == PF_PREC_BF16 ? dnnl_bf16 : int8 ? dnnl_s8 : dnnl_f32;
    dnnl_data_type_t ydt = int8 ? dnnl_s32 : dnnl_f32;
    dnnl_memory_desc_t xmd, wmd, bmd, ymd;
    dnnl_dims_t xd = {mm->m, mm->k}, wd = {mm->k, mm->n}, bd = {1, mm->n}, yd = {mm->m, mm->n};
    dnnl_dims_t xs = {mm->ldx, 1}, ys = {mm->ldy, 1};
    dnnl_status_t s;
    if ((s = dnnl_memory_desc_init_by_strides(&xmd, 2, xd, xdt, xs)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_strides(&ymd, 2, yd, ydt, ys)) != dnnl_success ||
        (s = dnnl_memory_desc_init_by_tag(&bmd, 2, bd, dnnl_f32, dnnl_ab)) != dnnl_success)
        return s;
    if (mm->wmd)
        wmd = *mm->wmd;
    else if ((s = dnnl_memory_desc_init_by_tag(&wmd, 2, wd, wdt, dnnl_format_tag_any)) != dnnl_success)
        return s;
    /* int8: the bias is added by the caller with the scales (see pf_dnnl_mm). */
    bool md_bias = mm->bias && !int8;
    dnnl_matmul_desc_t md;
    if ((s = dnnl_matmul_desc_init(&md, &xmd, &wmd, md_bias ? &bmd : NULL, &ymd)) != dnnl_success)
        return s;
    dnnl_primitive_attr_t attr;
    if ((s = dnnl_primitive_attr_create(&attr)) != dnnl_success)
        return s;
    s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success && !int8)
        s = set_post_ops(attr, mm);
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(pd, &md, attr, eng, NULL);
    dnnl_primitive_attr_destroy(attr);
    return s;
}

const char *pf_dnnl_impl(const_dnnl_primitive_desc_t pd)
{
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) != dnnl_success || !impl)
        return "unknown";
    return impl;
}

bool pf_dnnl_impl_is_ref(const char *impl)
{
    return strncmp(impl, "ref", 3) == 0 || strstr(impl, ":ref") != NULL;
}

bool pf_dnnl_md_is_plain(const dnnl_memory_desc_t *md)
{
    return md->format_kind == dnnl_blocked && md->format_desc.blocking.inner_nblks == 0;
}
