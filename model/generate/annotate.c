#include "model/generate/annotate.h"

#include <string.h>

int pf_annot_prepare(const pf_tokenizer *tok, const pf_config *cfg, const char *prompt, const float *pixels,
                     const pf_sample_params *params, uint64_t tag, pf_annot_input *out, pf_err *err)
{
    memset(out, 0, sizeof *out);
    if (pf_processor_build(tok, prompt, NULL, cfg->num_image_tokens, 1, &out->row, err) != 0)
        return pf_err_prefix(err, "prompt");
    out->req = (pf_gen_request){
        .pixels = pixels,
        .num_images = 1,
        .ids = out->row.input_ids.v,
        .n_ids = out->row.input_ids.n,
        .params = *params,
        .tag = tag,
    };
    return 0;
}

void pf_annot_input_free(pf_annot_input *in)
{
    pf_proc_row_free(&in->row);
    memset(in, 0, sizeof *in);
}

int pf_annot_text(const pf_tokenizer *tok, const int32_t *ids, size_t n, char **text, size_t *len, pf_err *err)
{
    return pf_tokenizer_decode(tok, ids, n, 1, text, len, err);
}
