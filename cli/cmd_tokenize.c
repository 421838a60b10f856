/* paliflow tokenize: placeholder until issue 3 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_tokenize(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("tokenize", "issue 3");
}
