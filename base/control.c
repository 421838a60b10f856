/* control.c - see control.h. */
#include "base/control.h"

#include <stddef.h>

int pf_control_stopping(const pf_control *c)
{
    return c->stop && *c->stop;
}

int pf_control_reload(const pf_control *c)
{
    if (!c->reload || !*c->reload)
        return 0;
    *c->reload = 0;
    if (c->on_reload)
        c->on_reload(c->reload_arg);
    return 1;
}
