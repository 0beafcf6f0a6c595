/* emc_nn transposed convolution (Keras Conv2DTranspose), written as a gather: each output pixel sums the
 * input pixels whose kernel patch covers it, so every output byte is written once and no int32 map is kept. */
#include "emc_nn.h"

/* First input index i and kernel tap k with i * stride + k == f, k < kernel and 0 <= i; the taps step by stride. */
static int32_t emc_first_tap(int32_t f, int32_t stride, int32_t kernel, int32_t size, int32_t *tap)
{
    int32_t k = f % stride, i;
    if (k < 0) k += stride;
    i = (f - k) / stride;
    /* move to the largest valid i (smallest tap) inside the input */
    if (i >= size) {
        k += (i - size + 1) * stride;
        i = size - 1;
    }
    *tap = k;
    return k < kernel ? i : -1;
}

void emc_conv2d_transpose_s8(const emc_conv_params *p, const int8_t *in, int8_t *out)
{
    int32_t oy, ox, oc, ic;
    for (oy = 0; oy < p->out_h; ++oy) {
        int32_t ky0, iy0 = emc_first_tap(oy + p->pad_top, p->stride_h, p->kernel_h, p->in_h, &ky0);
        for (ox = 0; ox < p->out_w; ++ox) {
            int32_t kx0, ix0 = emc_first_tap(ox + p->pad_left, p->stride_w, p->kernel_w, p->in_w, &kx0);
            int8_t *dst = out + (oy * p->out_w + ox) * p->out_c;
            for (oc = 0; oc < p->out_c; ++oc) {
                int32_t acc = p->bias[oc], iy, ky, q;
                for (iy = iy0, ky = ky0; iy0 >= 0 && iy >= 0 && ky < p->kernel_h; --iy, ky += p->stride_h) {
                    int32_t ix, kx;
                    for (ix = ix0, kx = kx0; ix0 >= 0 && ix >= 0 && kx < p->kernel_w; --ix, kx += p->stride_w) {
                        const int8_t *src = in + (iy * p->in_w + ix) * p->in_c;
                        const int8_t *w = p->weights + ((oc * p->kernel_h + ky) * p->kernel_w + kx) * p->in_c;
                        for (ic = 0; ic < p->in_c; ++ic)
                            acc += ((int32_t)src[ic] - p->in_zp) * w[ic];
                    }
                }
                q = emc_requant8(acc, p->mult[oc], p->shift[oc], p->out_zp, p->act_min, p->act_max);
                dst[oc] = p->lut ? p->lut[q + 128] : (int8_t)q;
            }
        }
    }
}
