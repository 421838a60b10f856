/* safetensors reader/writer: golden files open, round trips are exact, hostile headers are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../golden_split.h"
#include "model/io/safetensors.h"

static char g_tmp[256];

static void write_raw(const char *path, const char *header, size_t data_bytes)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = strlen(header);
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)(n >> (8 * i));
    fwrite(len8, 1, 8, f);
    fwrite(header, 1, n, f);
    for (size_t i = 0; i < data_bytes; i++)
        fputc(0, f);
    fclose(f);
}

static void expect_refused(const char *header, size_t data_bytes, const char *needle)
{
    pf_err err = {{0}};
    pf_st_file f;
    write_raw(g_tmp, header, data_bytes);
    assert_int_equal(pf_st_open(g_tmp, &f, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("header %s: message \"%s\" lacks \"%s\"", header, err.msg, needle);
    assert_non_null(strstr(err.msg, g_tmp));
}

static void test_golden_inputs_open(void **state)
{
    (void)state;
    pf_err err;
    pf_st_file f;
    char path[1024];
    snprintf(path, sizeof path, "%s/model/pg1_224_mqa_f32/inputs.safetensors", PF_GOLDEN_DIR);
    if (pf_st_open(path, &f, &err) != 0)
        fail_msg("%s", err.msg);
    const pf_st_tensor *t = pf_st_find(&f, "input_ids");
    assert_non_null(t);
    assert_int_equal(t->dtype, PF_DT_I64);
    assert_int_equal(t->ndim, 2);
    assert_int_equal(t->shape[0], 2);
    assert_non_null(pf_st_find(&f, "pixel_values"));
    assert_null(pf_st_find(&f, "nope"));
    pf_st_close(&f);
}

static void test_roundtrip(void **state)
{
    (void)state;
    pf_err err;
    float a[6] = {1, -2, 3.5f, 0, 1e-30f, -7};
    uint16_t b[3] = {pf_f32_to_bf16(1.0f), pf_f32_to_bf16(-0.5f), pf_f32_to_bf16(3.0f)};
    pf_st_entry e[2] = {
        {.name = "a", .dtype = PF_DT_F32, .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "b.bf16", .dtype = PF_DT_BF16, .ndim = 1, .shape = {3}, .data = b},
    };
    if (pf_st_write(g_tmp, e, 2, "{\"format\": \"pt\"}", &err) != 0)
        fail_msg("%s", err.msg);
    pf_st_file f;
    if (pf_st_open(g_tmp, &f, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(f.count, 2);
    float got[6];
    assert_int_equal(pf_st_read_f32(pf_st_find(&f, "a"), got, &err), 0);
    assert_memory_equal(got, a, sizeof a);
    assert_int_equal(pf_st_read_f32(pf_st_find(&f, "b.bf16"), got, &err), 0);
    assert_true(got[0] == 1.0f && got[1] == -0.5f && got[2] == 3.0f);
    pf_st_close(&f);
}

static void test_hostile_headers(void **state)
{
    (void)state;
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "data_offsets");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12");
    expect_refused("{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                   12, "overlap");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,8]}}", 8,
                   "shape");
    expect_refused("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,8]}}", 8, "shape");
    expect_refused("{\"a\": 3}", 0, "not an object");
    expect_refused("[1,2]", 0, "not a JSON object");
    expect_refused("{\"a\":{\"dtype\":\"F32\"", 0, "not valid JSON");
    /* header length beyond the file */
    FILE *f = fopen(g_tmp, "wb");
    uint8_t len8[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    fwrite(len8, 1, 8, f);
    fwrite("{}", 1, 2, f);
    fclose(f);
    pf_err err;
    pf_st_file st;
    assert_int_equal(pf_st_open(g_tmp, &st, &err), -1);
    assert_non_null(strstr(err.msg, "truncated"));
    f = fopen(g_tmp, "wb");
    fwrite("abc", 1, 3, f);
    fclose(f);
    assert_int_equal(pf_st_open(g_tmp, &st, &err), -1);
    assert_non_null(strstr(err.msg, "too short"));
}

int main(int argc, char **argv)
{
    int golden = pf_test_golden_group(&argc, &argv);
    if (argc != 1) {
        fprintf(stderr, "usage: %s [golden]\n", argv[0]);
        return 2;
    }
    snprintf(g_tmp, sizeof g_tmp, "/tmp/pf_test_st_%d.safetensors", (int)getpid());
    const struct CMUnitTest core[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_hostile_headers),
    };
    const struct CMUnitTest with_golden[] = {
        cmocka_unit_test(test_golden_inputs_open),
    };
    int rc = golden ? cmocka_run_group_tests_name("golden", with_golden, NULL, NULL)
                    : cmocka_run_group_tests_name("core", core, NULL, NULL);
    unlink(g_tmp);
    return rc;
}
