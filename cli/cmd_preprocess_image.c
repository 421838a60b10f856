/* paliflow preprocess-image: placeholder until issue 9 lands. */
#include "cli/cli_util.h"
#include "cli/commands.h"

int cmd_preprocess_image(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_not_yet("preprocess-image", "issue 9");
}
