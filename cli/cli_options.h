/* cli_options.h - option rows (base/optable.h) that several commands share, each written once: the
 * generation settings (generate, producer, run), the compute options of every model-running command, the
 * decode limits (preprocess-worker, run) and --progress (producer, run).
 *
 * Each macro takes the command struct T and the path S of the sub-struct the rows fill. */
#ifndef PF_CLI_OPTIONS_H
#define PF_CLI_OPTIONS_H

#include <stdint.h>

#include "base/optable.h"
#include "model/generate/session.h"
#include "proto/proto.h"

/* The generation settings, into a pf_task (its defaults: base/generation.h). */
#define CLI_TASK_ROWS(T, S)                                                                                        \
    PF_OPT_ROW_INT("max-new-tokens", T, S.max_new_tokens, 1, 1 << 20, 0, "N",                                     \
                   "tokens to generate at most; <eos> stops earlier"),                                             \
    PF_OPT_ROW_DOUBLE("temperature", T, S.temperature, 0, 1e6, 0, "T", "0 = greedy, > 0 samples"),                 \
    PF_OPT_ROW_INT("top-k", T, S.top_k, 0, INT32_MAX, 0, "K", "sample from the K most likely tokens (0 = off)"),   \
    PF_OPT_ROW_DOUBLE("top-p", T, S.top_p, 0, 1, 0, "P", "nucleus sampling threshold (1 = off)"),                  \
    PF_OPT_ROW_DOUBLE("repetition-penalty", T, S.repetition_penalty, 1e-6, 1e6, 0, "R",                           \
                      "1 = off; > 1 discourages tokens already in the prompt or output"),                          \
    PF_OPT_ROW_U64("seed", T, S.seed, 0, INT64_MAX, 0, "N", "sampling seed; same seed, same tokens"),              \
    PF_OPT_ROW_FLAG("autorotate", T, S.autorotate, 0,                                                             \
                    "apply EXIF orientation before resizing (off by default, like transformers)")

/* --backend, --precision, --threads, --no-memory-check, --adapter into a pf_session_params. */
int cli_backend_opt(const pf_opt *opt, void *session, const char *val, pf_err *err);
int cli_precision_opt(const pf_opt *opt, void *session, const char *val, pf_err *err);
#define CLI_ENGINE_ROWS(T, S)                                                                                      \
    {"backend", 0, PF_OPT_FUNC, offsetof(T, S), .fn = cli_backend_opt, .arg = "B", .def = "engine",               \
     .help = "engine (the fast oneDNN engine) or reference (the fp32 oracle, single-threaded, slow)"},            \
    {"precision", 0, PF_OPT_FUNC, offsetof(T, S), .fn = cli_precision_opt, .arg = "P", .def = "fp32",             \
     .help = "fp32 (exact to transformers' fp32), bf16, int8, or auto (the fastest within its accuracy "          \
             "contract, measured on this CPU and cached); see model/README.md"},                                  \
    {"threads", 0, PF_OPT_INT, offsetof(T, S.threads), 1, 4096, .arg = "N", .def = "all cores",                   \
     .help = "compute threads"},                                                                                   \
    PF_OPT_ROW_FLAG("no-memory-check", T, S.no_memory_check, 0,                                                   \
                    "load even when weights + KV cache exceed the memory this process may use (the check "        \
                    "otherwise refuses before loading and names the precision that would fit)"),                   \
    PF_OPT_ROW_STR("adapter", T, S.adapter, PF_OPT_NONEMPTY, "DIR",                                               \
                   "PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) merged into the weights " \
                   "at load")

/* The decode limits of a preprocessing command: --max-pixels into a uint64_t MP, --decode-memory-mb into a
 * double MB. The shipped units run 4 decode threads under MemoryMax=2G (deploy/), and the process needs room
 * besides decoding for the items it holds and libvips itself: hence 1024 MB by default. */
#define CLI_DECODE_MEMORY_MB_DEFAULT 1024
#define CLI_DECODE_ROWS(T, MP, MB)                                                                                 \
    PF_OPT_ROW_U64("max-pixels", T, MP, 1, 1e12, 0, "N",                                                          \
                   "refuse images with more than N pixels, read from the header before decoding (by default "  \
                   "Pillow's limit, Image.MAX_IMAGE_PIXELS)"),                                      \
    PF_OPT_ROW_DOUBLE("decode-memory-mb", T, MB, 16, 1 << 20, 0, "N",                                             \
                      "memory all decode threads together may use: each image reserves what decoding it takes, "  \
                      "estimated from its header, before its pixels are decoded; an image that needs more than N " \
                      "is an error record, one that fits waits for room")

/* --progress MODE into an int: -1 auto (a bar on a terminal, lines otherwise), 0 off, 1 lines, 2 bar. */
extern const pf_opt_choice cli_progress_choices[];
#define CLI_PROGRESS_ROW(T, F)                                                                                     \
    PF_OPT_ROW_ENUM("progress", T, F, cli_progress_choices, 0, "MODE",                                            \
                    "job progress on stderr (auto: a bar on a terminal, lines otherwise)")

#endif
