/* paliflow make-random-checkpoint: placeholder until issue 11 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_make_random_checkpoint(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("make-random-checkpoint", "issue 11");
}
