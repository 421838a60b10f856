/* stages.h - the product's real stages. They call the image library (image/image.h) and the model
 * (model/model.h, generate.h, tokenizer.h, processor.h). Test stages live in tests/ and are never
 * reachable from the paliflow binary. */
#ifndef PF_WORKERS_STAGES_H
#define PF_WORKERS_STAGES_H

#include "model/generate/sample.h"
#include "model/generate/session.h"
#include "proto/proto.h"
#include "image/image.h"
#include "workers/stage.h"

typedef struct pf_preprocess_params {
    uint64_t max_pixels;       /* refuse larger images before decoding (0 = Pillow's 178956970) */
    pf_img_budget *budget;     /* decode memory shared by all the stage's threads (NULL: none; owned by caller) */
} pf_preprocess_params;

typedef struct pf_inference_params {
    const char *model_dir;
    const char *tokenizer;
    pf_session_params session; /* backend, precision, threads; zero = the engine at fp32 on all cores */
    int max_batch;           /* sequences decoding at once (0: 64) */
    /* --seg-decoder, loaded by the command (NULL: none): results of segment prompts then carry their
     * objects with masks. Shared read-only by the stage; the command frees it after the run. */
    const struct pf_seg_decoder *seg_decoder;
} pf_inference_params;

/* A task's generation settings as the generator takes them (the inference stage, and `paliflow generate`
 * for the same results). */
pf_sample_params pf_task_sample_params(const pf_task *t);

extern const pf_stage_ops pf_stage_preprocess_ops;
extern const pf_stage_ops pf_stage_inference_ops;

#endif
