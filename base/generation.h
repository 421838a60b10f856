/* generation.h - the one default of the generation settings.
 *
 * Two structs carry them, in layers that cannot see each other: the job's pf_task (proto/proto.h: what a
 * producer sends with every item, with double-precision fields as on the wire) and the engine's
 * pf_sample_params (model/sample.h: what the generator takes per request). Both are initialised from this
 * list, `(pf_task){PF_GENERATION_DEFAULTS}`, so the defaults cannot drift apart again (they once did: 64 new
 * tokens for jobs, 32 for the engine). 64 is the number every command's --help documents.
 */
#ifndef PF_BASE_GENERATION_H
#define PF_BASE_GENERATION_H

/* greedy (temperature 0), top-k and top-p off, no repetition penalty, seed 0 */
#define PF_GENERATION_DEFAULTS                                                                                     \
    .max_new_tokens = 64, .temperature = 0, .top_k = 0, .top_p = 1, .repetition_penalty = 1, .seed = 0

#endif
