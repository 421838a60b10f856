/* paliflow - bulk image annotation with PaliGemma on CPUs. One binary, many subcommands. */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "cli/commands.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command g_commands[] = {
    {"run", cmd_run, "annotate folders of images in one process (embedded pipeline)"},
    {"producer", cmd_producer, "queue a job and hand out work to workers (binds)"},
    {"preprocess-worker", cmd_preprocess_worker, "decode and resize images for the model (connects)"},
    {"inference-worker", cmd_inference_worker, "run the model on preprocessed images (connects)"},
    {"sink", cmd_sink, "collect results into a JSON-lines file and publish them (binds)"},
    {"generate", cmd_generate, "run the model on image files and print the generated text"},
    {"decode-answer", cmd_decode_answer, "turn detect/segment answers (stdin) into boxes and masks (JSON lines)"},
    {"score", cmd_score, "print the loss and per-token NLL of a suffix for an image and prompt"},
    {"tokenize", cmd_tokenize, "encode/decode text or build processor inputs (JSON lines on stdin)"},
    {"preprocess-image", cmd_preprocess_image, "turn image files into model pixel tensors (safetensors)"},
    {"golden", cmd_golden, "check the model against golden case directories"},
    {"make-random-checkpoint", cmd_make_random_checkpoint, "write a random checkpoint with real shapes"},
    {"bench", cmd_bench, "measure GEMM rate, bandwidth, prefill, decode and images/s"},
    {"keygen", cmd_keygen, "make a CURVE key pair for secure transport"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: paliflow COMMAND [OPTIONS]\n\n"
                 "Annotate large image collections with PaliGemma on CPUs.\n\ncommands:\n");
    for (size_t i = 0; i < sizeof g_commands / sizeof g_commands[0]; i++)
        fprintf(out, "  %-24s %s\n", g_commands[i].name, g_commands[i].summary);
    fprintf(out, "\nRun 'paliflow COMMAND --help' for the options of a command.\n"
                 "Logging: PALIFLOW_LOG=error|warn|info|debug for any command; --log-level LEVEL on those whose\n"
                 "--help lists it.\n");
}

int main(int argc, char **argv)
{
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
            return g_commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "paliflow: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
