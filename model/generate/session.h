/* session.h - a checkpoint ready to generate: the model, the compute backend chosen at run time (the fast
 * engine at a precision, or the fp32 reference oracle) and a continuous-batching generator over it.
 *
 * What `paliflow generate`, `score`, `run`, `inference-worker` and `bench` open. The default is the engine at
 * fp32: exact to transformers' fp32 up to summation order (greedy ids match the goldens); bf16 / int8 / auto
 * are opt-in (model/README.md has their measured accuracy and speed).
 */
#ifndef PF_MODEL_SESSION_H
#define PF_MODEL_SESSION_H

#include <stddef.h>

#include "base/err.h"
#include "model/linear/cpu.h"
#include "model/engine/engine.h"
#include "model/generate/generate.h"
#include "model/io/model.h"

typedef enum pf_backend_kind { PF_BACKEND_ENGINE = 0, PF_BACKEND_REFERENCE = 1 } pf_backend_kind;

typedef struct pf_session_params {
    pf_backend_kind backend; /* default (0): the engine */
    pf_precision precision;  /* engine precision; PF_PREC_AUTO here means the default, fp32, unless auto_ok */
    int auto_ok;             /* precision AUTO really means "best this CPU runs" (set when the user said auto) */
    int threads;             /* 0: all cores */
    size_t max_active;       /* generator: sequences decoding at once (0: 64) */
    int no_memory_check;     /* load even when weights + KV cache exceed the memory budget (model/generate/memory.h) */
    const char *adapter;     /* PEFT LoRA adapter folder merged into the weights at load (model/io/lora.h), or NULL */
} pf_session_params;

typedef struct pf_session {
    pf_model *model;
    pf_engine *engine;     /* NULL with the reference backend */
    pf_generator *gen;
    pf_precision precision; /* in force */
} pf_session;

/* "engine" | "reference" */
int pf_backend_parse(const char *s, pf_backend_kind *out, pf_err *err);
const char *pf_backend_name(pf_backend_kind b);

/* Load DIR and build the backend and generator; logs backend, precision and ISA once (info). Before
 * reading any weight, refuses (naming what would fit) when the model cannot fit the memory this process
 * may use, unless no_memory_check; with precision auto it takes the fastest precision that fits. */
int pf_session_open(const char *dir, const pf_session_params *o, pf_session *s, pf_err *err);
void pf_session_close(pf_session *s);

#endif
