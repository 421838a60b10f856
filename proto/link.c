/* link.c - see link.h. */
#include "proto/link.h"

#include <stdio.h>
#include <string.h>

void pf_link_start(pf_link *l, double now)
{
    memset(l, 0, sizeof *l);
    l->last_heard = now;
}

int pf_link_tick(pf_link *l, double now, double hb_interval, double hb_timeout)
{
    int due = 0;
    if (now - l->last_hb >= hb_interval) {
        due |= PF_LINK_SEND_HB;
        l->last_hb = now;
        if (!l->welcomed && now - l->last_hello >= hb_interval)
            due |= PF_LINK_SEND_HELLO;
    }
    if (!l->silent && now - l->last_heard > hb_timeout) {
        due |= PF_LINK_WENT_SILENT;
        l->silent = 1;
        l->welcomed = 0;
    }
    return due;
}

int pf_link_heard(pf_link *l, double now)
{
    l->last_heard = now;
    int back = l->silent;
    l->silent = 0;
    return back;
}

int pf_link_welcome(pf_link *l, const char *instance)
{
    int other = strcmp(l->instance, instance) != 0;
    snprintf(l->instance, sizeof l->instance, "%s", instance);
    l->welcomed = 1;
    return other;
}

int pf_link_wants_hello(pf_link *l, const pf_msg *m, double now)
{
    return pf_msg_wants_hello(m, l->instance, &l->welcomed, l->last_hello, now);
}

void pf_link_said_hello(pf_link *l, double now)
{
    l->last_hello = now;
}

int pf_link_connected(const pf_link *l)
{
    return l->welcomed && !l->silent;
}
