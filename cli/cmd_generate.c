/* paliflow generate: placeholder until issue 8/12 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_generate(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("generate", "issue 8/12");
}
