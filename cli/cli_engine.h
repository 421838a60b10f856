/* cli_engine.h - the compute options every model-running subcommand takes (--backend, --precision,
 * --threads), parsed one way for all of them. */
#ifndef PF_CLI_ENGINE_H
#define PF_CLI_ENGINE_H

#include "base/err.h"
#include "model/generate/session.h"

#define CLI_ENGINE_OPTIONS_HELP                                                                                    \
    "  --backend B             engine (default: the fast oneDNN engine) or reference (the fp32 oracle,\n"        \
    "                          single-threaded, slow)\n"                                                          \
    "  --precision P           fp32 (default: exact to transformers' fp32), bf16, int8, or auto (the fastest\n" \
    "                          within its accuracy contract, measured on this CPU and cached); see model/README.md\n" \
    "  --threads N             compute threads (default: all cores)\n"                                       \
    "  --no-memory-check       load even when weights + KV cache exceed the memory this process may use (the\n"  \
    "                          check otherwise refuses before loading and names the precision that would fit)\n" \
    "  --adapter DIR           PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) merged into\n" \
    "                          the weights at load\n"

#define CLI_ENGINE_LONG_OPTIONS                                                                                    \
    {"backend", required_argument, 0, 0}, {"precision", required_argument, 0, 0},                                  \
        {"threads", required_argument, 0, 0}, {"no-memory-check", no_argument, 0, 0},                            \
        {"adapter", required_argument, 0, 0}

/* If NAME is one of the options above (VAL NULL for --no-memory-check), apply VAL to O: returns 1 (handled), -1 (bad value, err set);
 * 0 if NAME is another option. */
int cli_engine_option(const char *name, const char *val, pf_session_opts *o, pf_err *err);

#endif
