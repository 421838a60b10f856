#include "workers/image_internal.h"
#include <string.h>
int pf_img_bmp_open(const uint8_t *buf, size_t len, pf_img_dec *d, pf_img_errkind *kind, pf_err *err)
{
    (void)buf; (void)len; memset(d, 0, sizeof *d);
    *kind = PF_IMG_UNSUPPORTED;
    return pf_errf(err, "BMP: not yet");
}
