/* Test stages: stand-ins for the image library and the model with the same stage interface, so the
 * pipeline's machinery (credit, leases, retries, faults, batching) is tested for real. Never linked into
 * the paliflow binary.
 *
 * Preprocess: the "image" is the file's bytes. Content "BAD..." or an empty file -> error record;
 * "CRASH..." -> abort() (a poison pill that kills the worker); "FLAKY..." -> retry on the first attempt.
 * Otherwise rgb[i] = bytes[i % len], width = len, height = 1 + len % 7.
 * Inference (batched): each item takes `steps` step() calls; text = "test: <hex of the first 8 rgb bytes>
 * len=<width>"; detect prompts get "<loc0100><loc0200><loc0300><loc0400> cat ; <loc...> dog". */
#ifndef PF_TEST_STAGES_H
#define PF_TEST_STAGES_H

#include "workers/stage.h"

typedef struct pf_test_stage_params {
    int delay_ms;        /* per item (preprocess) or per step (inference) */
    int steps;           /* inference: steps per item */
    int model_size;      /* inference: the image size the "model" takes (0 = any) */
    int hang_after;      /* preprocess: items after the first N (all threads) never finish, 0 = none: a worker
                            that cannot end the job before a test kills it, however late the kill comes */
} pf_test_stage_params;

extern const pf_stage_ops pf_test_preprocess_ops;
extern const pf_stage_ops pf_test_inference_ops;

#endif
