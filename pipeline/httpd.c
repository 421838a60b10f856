/* httpd.c - see httpd.h. */
#include "pipeline/httpd.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "base/log.h"
#include "base/metrics.h"
#include "base/option.h"

struct pf_httpd {
    struct MHD_Daemon *d;
};

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, char *body, size_t len, const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(c, code, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned code, const char *msg)
{
    char *b = strdup(msg);
    return b ? reply(c, code, b, strlen(b), "text/plain; charset=utf-8") : MHD_NO;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)cls;
    (void)version;
    (void)upload_data;
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET only\n");
    if (*upload_size)
        return MHD_NO;   /* a GET with a body: drop the connection */
    if (!*con_cls) {     /* first call: headers only; answer on the second */
        static int marker;
        *con_cls = &marker;
        return MHD_YES;
    }
    if (!strcmp(url, "/metrics")) {
        size_t len = 0;
        char *body = pf_metrics_render(&len);
        if (!body)
            return text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
        return reply(c, MHD_HTTP_OK, body, len, "text/plain; version=0.0.4; charset=utf-8");
    }
    if (!strcmp(url, "/healthz") || !strcmp(url, "/readyz")) {
        char why[256], msg[300];
        int ok = !strcmp(url, "/healthz") ? pf_health_live(why, sizeof why) : pf_health_is_ready(why, sizeof why);
        snprintf(msg, sizeof msg, "%s\n", why);
        return text(c, ok ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, msg);
    }
    if (!strcmp(url, "/"))
        return text(c, MHD_HTTP_OK, "paliflow: /metrics /healthz /readyz\n");
    return text(c, MHD_HTTP_NOT_FOUND, "not found: /metrics /healthz /readyz\n");
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *sl, pf_err *err)
{
    char host[256];
    const char *colon;
    long long port;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof host)
            return pf_errf(err, "--metrics %s: want HOST:PORT or [IPv6]:PORT", addr);
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = '\0';
        colon = end + 1;
    } else {
        colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof host)
            return pf_errf(err, "--metrics %s: want HOST:PORT (e.g. 0.0.0.0:9100 or 127.0.0.1:9100)", addr);
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
    }
    if (pf_parse_int(colon + 1, 1, 65535, &port))
        return pf_errf(err, "--metrics %s: the port must be 1..65535", addr);
    memset(ss, 0, sizeof *ss);
    if (!host[0] || !strcmp(host, "*")) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl(INADDR_ANY);
        in->sin_port = htons((uint16_t)port);
        *sl = sizeof *in;
        return 0;
    }
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0 || !res)
        return pf_errf(err, "--metrics %s: cannot resolve '%s': %s", addr, host, gai_strerror(rc));
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *sl = res->ai_addrlen;
    freeaddrinfo(res);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    else
        return pf_errf(err, "--metrics %s: not an IP address", addr);
    return 0;
}

int pf_httpd_start(const char *addr, pf_httpd **out, pf_err *err)
{
    *out = NULL;
    struct sockaddr_storage ss;
    socklen_t sl;
    if (parse_addr(addr, &ss, &sl, err))
        return -1;
    pf_httpd *h = calloc(1, sizeof *h);
    if (!h)
        return pf_errf(err, "out of memory");
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    uint16_t port = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                             : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    h->d = MHD_start_daemon(flags, port, NULL, NULL, handle, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!h->d) {
        free(h);
        return pf_errf(err, "--metrics %s: cannot listen there (port in use, or not an address of this host?)",
                       addr);
    }
    pf_info("metrics", "serving /metrics, /healthz, /readyz on http://%s", addr);
    *out = h;
    return 0;
}

void pf_httpd_stop(pf_httpd *h)
{
    if (!h)
        return;
    MHD_stop_daemon(h->d);
    free(h);
}
