/* checkpoint.h - the safetensors files of a Hugging Face checkpoint folder, memory-mapped.
 *
 * A folder holds either model.safetensors or shards listed by model.safetensors.index.json
 * ({"weight_map": {tensor name: shard file}}); like transformers, a single model.safetensors wins.
 * Every shard is opened with the validating reader (safetensors.h), so tensors handed out are in bounds.
 */
#ifndef PF_MODEL_CHECKPOINT_H
#define PF_MODEL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "model/io/safetensors.h"

#define PF_CKPT_MAX_SHARDS 4096
#define PF_CKPT_MAX_INDEX_BYTES (64u << 20)

/* One weight_map entry: tensor name -> shard number. */
typedef struct pf_ckpt_index_entry {
    char *name;
    int shard;
} pf_ckpt_index_entry;

/* A parsed model.safetensors.index.json. */
typedef struct pf_ckpt_index {
    char **shards;               /* distinct shard file names, in first-seen order */
    size_t n_shards;
    pf_ckpt_index_entry *entries; /* sorted by name */
    size_t n_entries;
} pf_ckpt_index;

typedef struct pf_checkpoint {
    char *dir;
    pf_st_file *files; /* one per shard (or the single model.safetensors) */
    size_t n_files;
    pf_ckpt_index index; /* empty for a single file */
    uint64_t total_bytes; /* sum of the files' sizes */
} pf_checkpoint;

int pf_checkpoint_open(const char *dir, pf_checkpoint *out, pf_err *err);
void pf_checkpoint_close(pf_checkpoint *c);
/* The tensor stored under NAME (exact checkpoint name), or NULL. Sets *file_path to its file if non-NULL. */
const pf_st_tensor *pf_checkpoint_find(const pf_checkpoint *c, const char *name, const char **file_path);

/* Parse index JSON text (exposed for the fuzzer). Shard names must be plain file names (no '/', not "..").
 * Free with pf_ckpt_index_free. */
int pf_ckpt_index_parse(const char *json, size_t len, const char *name, pf_ckpt_index *out, pf_err *err);
void pf_ckpt_index_free(pf_ckpt_index *ix);

#endif
