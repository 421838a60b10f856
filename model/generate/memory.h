/* memory.h - how much memory a model needs at a precision, computed from its shapes, and how much this
 * process may use; the check that refuses a load that cannot fit BEFORE anything is read.
 *
 * Need = converted weights + KV cache + activations + a fixed overhead:
 *   weights      every linear layer (vision, projector, decoder, the LM head: the tied embedding converted
 *                once more, as the engine does) at the precision's bytes per parameter (int8: + one f32 scale
 *                and one i32 row sum per output row), norms / biases / position table in f32. The token
 *                embedding is read row by row from the checkpoint's mapping (file pages, reclaimable): not
 *                counted. The reference backend holds every tensor in f32.
 *   KV cache     f32 K and V, every layer, for `sequences` rows of (image tokens + `text_tokens`) positions,
 *                rounded up to whole pages of PF_ENGINE_PAGE tokens.
 *   activations  one prefill of one such row: the vision tower's scratch (4 P w + min(P,256) I_v floats + the
 *                residual), the decoder's (hidden, q/k/v, a 256-row MLP chunk) and the logits row.
 *   overhead     PF_MEM_OVERHEAD: code, oneDNN scratchpads, tokenizer tables, image cache (measured peak
 *                RSS minus the above was 0.35-0.6 GB on the 3B models, model/README "Memory").
 * Budget = the smallest of: cgroup v2 memory.max (this process's cgroup and its parents), cgroup v1
 * memory.limit_in_bytes, and MemAvailable (/proc/meminfo); PALIFLOW_MEMORY_BUDGET (bytes, or with a K/M/G
 * suffix, powers of 1024) replaces it (tests, or a deliberate limit).
 */
#ifndef PF_MODEL_MEMORY_H
#define PF_MODEL_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/io/config.h"
#include "model/linear/cpu.h"

#define PF_MEM_OVERHEAD (512ull << 20)
#define PF_MEM_TEXT_TOKENS 256 /* prompt + new tokens assumed per sequence by the load-time check */

typedef struct pf_mem_need {
    uint64_t weights, kv, activations, overhead, total;
} pf_mem_need;

/* Need for `sequences` concurrent sequences of image tokens + text_tokens positions; reference != 0: the
 * fp32 reference backend (precision ignored). */
void pf_mem_estimate(const pf_config *c, pf_precision p, int reference, size_t sequences, size_t text_tokens,
                     pf_mem_need *out);

/* Bytes this process may still use; *source names where the figure came from ("cgroup v2 memory.max
 * /sys/fs/cgroup/...", "MemAvailable", "PALIFLOW_MEMORY_BUDGET"). Fails if nothing could be read. */
int pf_mem_budget(uint64_t *bytes, char *source, size_t source_len, pf_err *err);

/* The smallest memory limit along the cgroup paths that cgroup_text (/proc/self/cgroup's format) names,
 * read under sys_root (/sys/fs/cgroup): v2 ("0::/path") memory.max of the cgroup and every ancestor, v1
 * ("N:memory:/path") memory/.../memory.limit_in_bytes likewise; "max" and v1's huge no-limit value count as
 * none. 0 if there is no limit; *source names the file that set it. (Exposed for tests on a fake tree.) */
uint64_t pf_mem_cgroup_limit(const char *cgroup_text, const char *sys_root, char *source, size_t len);

/* "12.3 GB" */
void pf_mem_format(uint64_t bytes, char *buf, size_t len);

/* The load-time check: weights + KV for one sequence + activations + overhead against the budget. On
 * refusal the message names the need, the budget and its source, the precisions that would fit, and the
 * override (--no-memory-check). For p == AUTO the caller resolves first. */
int pf_mem_check(const pf_config *c, pf_precision p, int reference, pf_err *err);

#endif
