/* malloc_tune - glibc malloc settings for a process that moves image-sized buffers all day. */
#ifndef PF_MALLOC_TUNE_H
#define PF_MALLOC_TUNE_H

/* Keep buffers under 32 MiB in the heap and keep up to 16 MiB of freed heap mapped. Call once, first thing
 * in main, before any thread starts. Does nothing when GLIBC_TUNABLES sets malloc options (the user's wins). */
void pf_malloc_tune(void);

#endif
