/* decoder.h - big_vision's PaliGemma mask decoder: 16 <seg> codes -> a 64x64 float map.
 *
 * The definition is big_vision/evaluators/proj/paligemma/transfers/segmentation.py (`Decoder`,
 * `ResBlock`, `_get_params`, `_quantized_values_from_codebook_indices`), with the weights of vae-oid.npz
 * stored in PyTorch layout. The steps (../shared/golden/seg/README.md has the line-by-line citations):
 *   codes -> codebook rows laid out row-major as a 4x4 grid (code i at row i/4, column i%4), D channels;
 *   Conv 1x1 D->128, ReLU; 2 x ResBlock (conv3x3, ReLU, conv3x3, ReLU, conv1x1, + input; no ReLU after
 *   the add); 4 x ConvTranspose 4x4 stride 2 (Flax padding 2 with transpose_kernel=True, which is PyTorch's
 *   conv_transpose2d(stride=2, padding=1) on the stored [in,out,4,4] weight), each + ReLU, channels
 *   128->128->64->32->16, size 4->8->16->32->64; Conv 1x1 16->1 with no activation (the output is not
 *   clipped: "in [-1, 1]" in the reference's docstring describes the training target, not the decoder).
 * fp32 weights and activations, each output a float64 sum (the golden data is the float64 result rounded
 * to float32; this stays within ~1e-6 of it).
 */
#ifndef PF_MODEL_SEG_DECODER_H
#define PF_MODEL_SEG_DECODER_H

#include "base/err.h"
#include "model/seg/npz.h"

#define PF_SEG_CODES 16      /* <seg> tokens per object */
#define PF_SEG_CODEBOOK 128  /* <seg000>..<seg127> */
#define PF_SEG_OUT 64        /* the decoder's output is PF_SEG_OUT x PF_SEG_OUT */

typedef struct pf_seg_decoder pf_seg_decoder;

/* Load from a vae-oid.npz file: every decoder key present as float32 with the expected shape (D read from
 * `_vq_vae._embedding`), all values finite; otherwise refused naming PATH and the array. Extra keys
 * (the encoder's) are ignored. */
int pf_seg_decoder_load(const char *path, pf_seg_decoder **out, pf_err *err);
/* The same from an already parsed archive; LABEL names it in messages. */
int pf_seg_decoder_from_npz(const pf_npz *z, const char *label, pf_seg_decoder **out, pf_err *err);
void pf_seg_decoder_free(pf_seg_decoder *d);

/* D, the codebook vector size. */
int pf_seg_decoder_dim(const pf_seg_decoder *d);

/* CODES (each 0..127) -> OUT[y * 64 + x]. Thread-safe (scratch per call). Fails on a code out of range or
 * out of memory. */
int pf_seg_decode(const pf_seg_decoder *d, const int codes[PF_SEG_CODES], float out[PF_SEG_OUT * PF_SEG_OUT],
                  pf_err *err);

#endif
