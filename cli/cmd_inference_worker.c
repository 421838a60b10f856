/* paliflow inference-worker: placeholder until issue 5 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_inference_worker(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("inference-worker", "issue 5");
}
