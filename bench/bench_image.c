/* bench_image - images/s of the image preprocessor against Pillow, measured in the same run.
 *
 *   taskset -c 0 build/bench/bench_image [--sizes 224,448] [--reps 5] [--python /usr/bin/python3]
 *                                        [--no-pillow] [--detail] [FILE...]
 *
 * Default corpus: every image in ../shared/golden/images (33 files, 0.1 to 6 megapixels). Per image:
 * paliflow reads the file, decodes, resizes and normalises to float32 [3,S,S] (pf_img_load_file +
 * pf_img_to_pixels), on one thread; Pillow does open + convert + resize + rescale/normalise + CHW
 * (bench/pillow_baseline.py) over the same files in a child process. Pin to one core with taskset so
 * both get exactly one; the figure is images per second per core. Not a test: timings are noisy on
 * shared machines, read the ratio. Rates are images per CPU second of the process (robust when other
 * processes share the core); wall-clock rates are printed too.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/file.h"
#include "image/image.h"

#ifndef PF_SOURCE_DIR
#define PF_SOURCE_DIR "."
#endif

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static size_t default_corpus(char ***out)
{
    const char *dir = PF_SOURCE_DIR "/../shared/golden/images";
    DIR *d = opendir(dir);
    size_t n = 0, cap = 64;
    char **v = malloc(cap * sizeof *v);
    struct dirent *e;
    while (d && (e = readdir(d))) {
        const char *dot = strrchr(e->d_name, '.');
        if (!dot || e->d_name[0] == '.' || strcmp(dot, ".md") == 0)
            continue;
        if (n == cap)
            v = realloc(v, (cap *= 2) * sizeof *v);
        v[n++] = pf_path_join(dir, e->d_name);
    }
    if (d)
        closedir(d);
    qsort(v, n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

/* Run the Pillow baseline; returns images/s or -1. */
static double pillow(const char *python, int size, int reps, char **files, size_t n)
{
    int fd[2];
    if (pipe(fd))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        char **argv = calloc(n + 6, sizeof *argv);
        char s[16], r[16];
        snprintf(s, sizeof s, "%d", size);
        snprintf(r, sizeof r, "%d", reps);
        argv[0] = (char *)python;
        argv[1] = PF_SOURCE_DIR "/bench/pillow_baseline.py";
        argv[2] = s;
        argv[3] = r;
        for (size_t i = 0; i < n; i++)
            argv[4 + i] = files[i];
        execv(python, argv);
        _exit(127);
    }
    close(fd[1]);
    char buf[256] = {0};
    size_t got = 0;
    ssize_t k;
    while (got < sizeof buf - 1 && (k = read(fd[0], buf + got, sizeof buf - 1 - got)) > 0)
        got += (size_t)k;
    close(fd[0]);
    int st;
    waitpid(pid, &st, 0);
    double ips;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || sscanf(buf, "images_per_s %lf", &ips) != 1)
        return -1;
    return ips;
}

int main(int argc, char **argv)
{
    int sizes[8] = {224, 448}, nsizes = 2, reps = 5, run_pillow = 1, detail = 0;
    const char *python = "/usr/bin/python3";
    char **files = NULL;
    size_t nfiles = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--sizes") && i + 1 < argc) {
            nsizes = 0;
            for (char *t = strtok(argv[++i], ","); t && nsizes < 8; t = strtok(NULL, ","))
                sizes[nsizes++] = atoi(t);
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--python") && i + 1 < argc) {
            python = argv[++i];
        } else if (!strcmp(argv[i], "--no-pillow")) {
            run_pillow = 0;
        } else if (!strcmp(argv[i], "--detail")) {
            detail = 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: taskset -c 0 %s [--sizes 224,448] [--reps N] [--python PY] [--no-pillow] [--detail] "
                   "[FILE...]\n",
                   argv[0]);
            return 0;
        } else {
            files = argv + i;
            nfiles = (size_t)(argc - i);
            break;
        }
    }
    if (!files)
        nfiles = default_corpus(&files);
    pf_err err;
    if (!nfiles || reps < 1 || pf_img_init(&err)) {
        fprintf(stderr, "bench_image: no files, bad --reps, or libvips failed\n");
        return 2;
    }
    printf("corpus: %zu files, %d reps per size, one thread\n", nfiles, reps);
    for (int s = 0; s < nsizes; s++) {
        int S = sizes[s];
        pf_img_params o = {.size = S};
        float *px = malloc((size_t)S * S * 3 * sizeof *px);
        double *per = calloc(nfiles, sizeof *per);
        for (size_t i = 0; i < nfiles; i++) { /* warm-up and check */
            pf_img img;
            pf_img_errkind kind;
            if (pf_img_load_file(files[i], &o, &img, &kind, &err)) {
                fprintf(stderr, "bench_image: %s\n", err.msg);
                return 1;
            }
            pf_img_free(&img);
        }
        double t0 = pf_now(), c0 = cpu_now();
        for (int r = 0; r < reps; r++)
            for (size_t i = 0; i < nfiles; i++) {
                double a = cpu_now();
                pf_img img;
                pf_img_errkind kind;
                pf_img_load_file(files[i], &o, &img, &kind, &err);
                pf_img_to_pixels(img.rgb, S, px);
                pf_img_free(&img);
                per[i] += cpu_now() - a;
            }
        double dt = pf_now() - t0, dc = cpu_now() - c0;
        double ours = (double)nfiles * reps / dc, ours_wall = (double)nfiles * reps / dt;
        double pil = run_pillow ? pillow(python, S, reps, files, nfiles) : -1;
        if (pil > 0)
            printf("S=%d: paliflow %.1f images/s (wall %.1f), Pillow %.1f images/s, ratio %.2fx\n", S, ours,
                   ours_wall, pil, ours / pil);
        else
            printf("S=%d: paliflow %.1f images/s (wall %.1f)%s\n", S, ours, ours_wall,
                   run_pillow ? " (Pillow baseline failed)" : "");
        if (detail)
            for (size_t i = 0; i < nfiles; i++)
                printf("  %8.3f ms  %s\n", per[i] / reps * 1e3, files[i]);
        free(per);
        free(px);
    }
    return 0;
}
