/* grow.h - the one way an array grows here: its capacity doubles when what it must hold does not fit. */
#ifndef PF_GROW_H
#define PF_GROW_H

#include <stddef.h>

/* Make room in *V (capacity *CAP elements of SIZE bytes, N of them used) for NEED more: the capacity doubles,
 * from FIRST, until they fit. 0, or -1 when out of memory or the size overflows (*V and *CAP unchanged). */
int pf_grow(void **v, size_t *cap, size_t n, size_t need, size_t size, size_t first);

/* pf_grow on a typed array ARR (its element size taken from it). */
#define PF_GROW(arr, cap, n, need, first) pf_grow((void **)&(arr), &(cap), (n), (need), sizeof *(arr), (first))

#endif
