/* signals.c - see signals.h. */
#include "base/signals.h"

#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t *g_flag;

static void on_signal(int sig)
{
    (void)sig;
    if (g_flag && *g_flag) {
        static const char msg[] = "paliflow: second signal, exiting now\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(130);
    }
    if (g_flag)
        *g_flag = 1;
}

void pf_install_stop_signals(volatile sig_atomic_t *flag)
{
    g_flag = flag;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

static volatile sig_atomic_t *g_reload;

static void on_hup(int sig)
{
    (void)sig;
    if (g_reload)
        *g_reload = 1;
}

void pf_install_reload_signal(volatile sig_atomic_t *flag)
{
    g_reload = flag;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_hup;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGHUP, &sa, NULL);
}
