/* paliflow - bulk image annotation with PaliGemma on CPUs. One binary, many subcommands. */
#include <stdio.h>
#include <string.h>

#include "base/config_file.h"
#include "base/log.h"
#include "base/malloc_tune.h"
#include "cli/commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
    /* 1: the command expands --config FILE itself (the long-running roles keep their argv to read the file
     * again on SIGHUP); 0: main() expands it before the command sees argv, so every command takes it */
    int own_config;
} command;

static const command g_commands[] = {
    {"run", cmd_run, "annotate folders of images in one process (embedded pipeline)", 1},
    {"producer", cmd_producer, "queue a job and hand out work to workers (binds)", 1},
    {"preprocess-worker", cmd_preprocess_worker, "decode and resize images for the model (connects)", 1},
    {"inference-worker", cmd_inference_worker, "run the model on preprocessed images (connects)", 1},
    {"sink", cmd_sink, "collect results into a JSON-lines file and publish them (binds)", 1},
    {"generate", cmd_generate, "run the model on image files and print the generated text", 0},
    {"decode-answer", cmd_decode_answer, "turn detect/segment answers (stdin) into boxes and masks (JSON lines)", 0},
    {"score", cmd_score, "print the loss and per-token NLL of a suffix for an image and prompt", 0},
    {"tokenize", cmd_tokenize, "encode/decode text or build processor inputs (JSON lines on stdin)", 0},
    {"preprocess-image", cmd_preprocess_image, "turn image files into model pixel tensors (safetensors)", 0},
    {"golden", cmd_golden, "check the model against golden case directories", 0},
    {"make-random-checkpoint", cmd_make_random_checkpoint, "write a random checkpoint with real shapes", 0},
    {"bench", cmd_bench, "measure GEMM rate, bandwidth, prefill, decode and images/s", 0},
    {"keygen", cmd_keygen, "make a CURVE key pair for secure transport", 0},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: paliflow COMMAND [OPTIONS]\n\n"
                 "Annotate large image collections with PaliGemma on CPUs.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++)
        fprintf(out, "  %-24s %s\n", g_commands[i].name, g_commands[i].summary);
    fprintf(out, "\nRun 'paliflow COMMAND --help' for the options of a command.\n"
                 "Every command takes --config FILE ('name = value' lines) and --log-level LEVEL\n"
                 "(error|warn|info|debug; or PALIFLOW_LOG=LEVEL).\n");
}

/* Every command takes --config FILE (README): the file's "name = value" lines become --name=value options
 * placed before the command line's, so the command line wins (base/config_file.h). */
static int run_command(const command *c, int argc, char **argv)
{
    if (c->own_config)
        return c->run(argc, argv);
    int n;
    char **v;
    pf_err err = {{0}};
    if (pf_config_expand_argv(argc, argv, &n, &v, &err)) {
        fprintf(stderr, "paliflow %s: %s\n", c->name, err.msg);
        return 2;
    }
    int rc = c->run(n, v);
    pf_config_free_argv(n, v);
    return rc;
}

int main(int argc, char **argv)
{
    pf_malloc_tune();   /* before any thread: see base/malloc_tune.c */
    pf_log_init_from_env();
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("paliflow 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++)
        if (strcmp(argv[1], g_commands[i].name) == 0)
            return run_command(&g_commands[i], argc - 1, argv + 1);
    fprintf(stderr, "paliflow: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
