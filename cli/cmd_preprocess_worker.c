/* paliflow preprocess-worker: placeholder until issue 5 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_preprocess_worker(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("preprocess-worker", "issue 5");
}
