/* libFuzzer target: the sink's record line written straight from a message (pipeline/record_line.c) must be
 * byte for byte jansson's compact dump of pf_record_make + '\n', for any result or error message a worker can
 * send (decoded by the real decoder: any strings, invalid UTF-8, NUL in the text, odd timings, boxes, objects,
 * meta); and a double's spelling (pipeline/json_real.c) that of snprintf + jansson's clean-up.
 * Build: cmake -S . -B build-fuzz -DPALIFLOW_FUZZ=ON -DCMAKE_C_COMPILER=clang-14 &&
 *        cmake --build build-fuzz --target fuzz_record_line
 * Run:   build-fuzz/fuzz/fuzz_record_line -max_total_time=300 -rss_limit_mb=512 CORPUS/ fuzz/corpus_proto */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/json_real.h"
#include "pipeline/record.h"
#include "pipeline/record_line.h"
#include "proto/proto.h"

static int put_cb(const char *buf, size_t size, void *data)
{
    pf_line_buf *b = data;
    char *p = realloc(b->p, b->n + size + 1);
    if (!p)
        return -1;
    b->p = p;
    memcpy(b->p + b->n, buf, size);
    b->n += size;
    return 0;
}

static void check_line(const pf_msg *m)
{
    json_t *rec = pf_record_make(m);
    pf_line_buf want = {0}, got = {0};
    if (rec && !json_dump_callback(rec, put_cb, &want, JSON_COMPACT) && !put_cb("\n", 1, &want) &&
        !pf_record_line(m, &got) && (got.n != want.n || memcmp(got.p, want.p, got.n) != 0))
        abort();   /* the sink would write another line than before */
    json_decref(rec);
    free(want.p);
    free(got.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i + sizeof(double) <= size && i < 64; i += sizeof(double)) {
        double v;
        memcpy(&v, data + i, sizeof v);
        char fast[PF_JSON_REAL_MAX], slow[PF_JSON_REAL_MAX];
        if (isfinite(v) && (pf_json_real(v, fast) != pf_json_real_slow(v, slow) || strcmp(fast, slow) != 0))
            abort();
    }
    pf_proto_limits lim = pf_proto_default_limits();
    lim.max_msg_bytes = 1 << 20;
    pf_msg m;
    pf_err e;
    if (pf_msg_decode(data, size, &lim, &m, &e) == 0 && (m.type == PF_MSG_RESULT || m.type == PF_MSG_ERROR))
        check_line(&m);
    pf_msg_free(&m);
    return 0;
}
