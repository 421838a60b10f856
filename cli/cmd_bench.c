/* paliflow bench: placeholder until issue 11 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_bench(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("bench", "issue 11");
}
