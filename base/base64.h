/* base64.h - RFC 4648 base64 (standard alphabet, '=' padding), for bytes that must travel in JSON text:
 * a file name that is not valid UTF-8 is carried as base64 of its raw bytes (records' `path_b64`). */
#ifndef PF_BASE_BASE64_H
#define PF_BASE_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Encode LEN bytes into a fresh malloc'd, NUL-terminated string (NULL: out of memory). */
char *pf_b64_encode(const void *data, size_t len);

/* Decode the NUL-terminated TEXT (canonical form only: standard alphabet, length a multiple of 4, '=' only
 * as the final padding, unused bits zero) into a fresh malloc'd buffer with a NUL after the *len bytes.
 * Returns -1 (nothing allocated) on anything else, so that one byte string has exactly one encoding. */
int pf_b64_decode(const char *text, uint8_t **out, size_t *len);

#endif
