/* stage.h - what a worker does to an item, separate from how it talks to the pipeline.
 *
 * The worker runtime (worker.h) connects to the producer and sink, pulls items with credit, keeps the
 * heartbeats and hands items to a stage. A stage is either per-item (`process`: decode and resize one
 * image; run on `threads` compute threads, one instance each) or batched (`submit`/`step`/`active`: the
 * inference engine's continuous batching: new items join between decode steps, finished ones leave; one
 * instance on one compute thread). Real stages: stage_preprocess.c, stage_inference.c; tests bring their
 * own (tests/pipeline/test_stages.c).
 */
#ifndef PF_WORKERS_STAGE_H
#define PF_WORKERS_STAGE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "proto/proto.h"

enum { PF_WORK_OK = 0, PF_WORK_FAILED = 1, PF_WORK_RETRY = 2 };

typedef struct pf_work {
    /* input: the decoded item; its strings and `in.data` live as long as the work */
    pf_msg in;
    uint8_t *buf_;
    size_t buf_len_;
    void *frame_;             /* or the received frames themselves (zmq_msg_t[2], heap: the map and the data
                                 frame, empty when the item came in one frame): `in` points into them */
    double t_received;
    /* outcome, set by the stage */
    int status;               /* PF_WORK_OK, PF_WORK_FAILED (final: error record), PF_WORK_RETRY (give back;
                                 counts an attempt; after N attempts the producer writes the error record) */
    char message[512];        /* reason when not OK */
    int worker_fault;         /* with PF_WORK_RETRY: the failure is this worker's (its host cannot see the file,
                                 its model takes another size), not the item's: the producer quarantines the
                                 worker instead of charging the item an attempt */
    /* preprocess output: uint8 [size, size, 3] HWC RGB (malloc'd, freed by the runtime) */
    uint8_t *rgb;
    int size, width, height;  /* width/height: the original image */
    double read_s;            /* time spent reading the file (path-only mode) */
    char content_key[PF_KEY_LEN + 1];   /* path-only mode: the key of the bytes read (pf_item_content_key); "" none */
    /* inference output (malloc'd, freed by the runtime) */
    char *text;
    size_t text_len;          /* text may hold NUL bytes (decoded byte tokens) */
    int32_t *ids;
    size_t n_ids;
    int stopped_by_eos;
    char *objects;            /* segment prompts with a mask decoder: the objects JSON (model/seg/objects.h) */
    size_t objects_len;
    double prefill_s, decode_s;
    /* set by the runtime */
    double t_start, t_end;
    int start_sent_;
} pf_work;

/* Set a work's outcome with a printf-style reason. */
void pf_work_fail(pf_work *w, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

typedef struct pf_stage_ops {
    const char *name;        /* "preprocess" | "inference": the stage named in error records */
    void *(*create)(const void *cfg, pf_err *err);
    void (*destroy)(void *inst);
    /* per-item stages */
    void (*process)(void *inst, pf_work *w);
    /* batched stages (process == NULL). submit may finish an item at once (bad input): it then comes
     * back from the next step. step advances every active item by one step and returns the finished
     * ones in *done (an array owned by the stage, valid until the next call). A failing step is fatal
     * for the worker (its items are handed back). */
    int (*submit)(void *inst, pf_work *w, pf_err *err);
    int (*step)(void *inst, pf_work ***done, size_t *n_done, pf_err *err);
    size_t (*active)(const void *inst);
    /* optional: the image size S the stage needs (inference: the model's), 0 = any */
    int (*image_size)(const void *inst);
} pf_stage_ops;

#endif
