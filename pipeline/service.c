/* service.c - see service.h. */
#include "pipeline/service.h"

#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/signals.h"

int pf_service_start(pf_service *s, pf_err *err)
{
    if (!s->sec.loaded && pf_security_load(&s->sec, err))
        return -1;
    if (s->metrics && pf_httpd_start(s->metrics, &s->httpd, err))
        return -1;
    pf_install_reload_signal(&s->reload);
    return 0;
}

void pf_service_stop(pf_service *s)
{
    pf_httpd_stop(s->httpd);
    s->httpd = NULL;
    free(s->allow_owned);
    s->allow_owned = NULL;
}

void pf_service_reloaded(pf_service *live, const pf_service *fresh)
{
    const char *now = fresh->sec.allow_path;
    if (!live->sec.allow_path || !now || strcmp(live->sec.allow_path, now) == 0)
        return;
    char *copy = strdup(now);
    if (!copy)
        return;
    pf_info("config", "reload: curve-allow %s -> %s", live->sec.allow_path, now);
    free(live->allow_owned);
    live->allow_owned = copy;
    live->sec.allow_path = copy;
}
