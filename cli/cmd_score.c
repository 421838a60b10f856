/* paliflow score: placeholder until issue 8 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_score(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("score", "issue 8");
}
