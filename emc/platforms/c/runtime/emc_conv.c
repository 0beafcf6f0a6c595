/* emc_nn convolutions: 2-D convolution and depthwise convolution, int8 NHWC, per-channel requantisation.
 *
 * Convolution: per output pixel the kernel window is gathered once into the column buffer (padding taps read the
 * input zero point, which the folded bias cancels) -- or read in place when it is contiguous in the input --
 * then every output channel is one dot product of length kernel_h * kernel_w * in_c (emc_dot.c).
 * Depthwise: windows inside the input take a branch-free path; border windows add in_zp * w for padding taps.
 */
#include "emc_nn.h"

static void emc_conv_epilogue(const emc_conv_params *p, emc_epilogue *e)
{
    e->kbias = p->kbias; e->mult = p->mult; e->shift = p->shift;
    e->out_zp = p->out_zp; e->act_min = p->act_min; e->act_max = p->act_max; e->lut = p->lut;
}

/* rows x n bytes from src (rows `step` bytes apart) to dst back to back, four at a time where possible. */
static void emc_copy_rows(int8_t *dst, const int8_t *src, int32_t rows, int32_t n, int32_t step)
{
    for (; rows > 0; --rows, src += step) {
        const int8_t *s = src;
        int32_t k = n;
        for (; k >= 4; k -= 4, s += 4, dst += 4) {
            uint32_t v;
            memcpy(&v, s, 4);      /* one unaligned LDR / STR where the core allows it */
            memcpy(dst, &v, 4);
        }
        for (; k > 0; --k) *dst++ = *s++;
    }
}

static void emc_fill(int8_t *dst, int32_t value, int32_t n)
{
    for (; n > 0; --n) *dst++ = (int8_t)value;
}

/* A window that overlaps the padding into col, [kh][kw][in_c]; taps outside the input read in_zp. */
static void emc_gather_border(const emc_conv_params *p, const int8_t *in, int32_t iy0, int32_t ix0, int8_t *col)
{
    const int32_t c = p->in_c;
    int32_t ky, kx;
    for (ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        for (kx = 0; kx < p->kernel_w; ++kx, col += c) {
            const int32_t ix = ix0 + kx * p->dilation_w;
            if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w)
                emc_fill(col, p->in_zp, c);
            else
                emc_copy_rows(col, in + (iy * p->in_w + ix) * c, 1, c, 0);
        }
    }
}

void emc_conv2d_s8(const emc_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->in_c, in_w = p->in_w, kh = p->kernel_h, kw = p->kernel_w;
    const int32_t kin = kh * kw * c, out_c = p->out_c, out_w = p->out_w;
    const int32_t span_h = (kh - 1) * p->dilation_h, span_w = (kw - 1) * p->dilation_w;
    const int32_t row_step = p->dilation_h * in_w * c;    /* input bytes between two kernel rows */
    const int contiguous = kh == 1 && (kw == 1 || p->dilation_w == 1);
    const int rows_copy = p->dilation_w == 1 || kw == 1;  /* a kernel row is kw * in_c contiguous bytes */
    int8_t *col = p->col, *dst = out;
    int32_t oy, ox;
    emc_epilogue e;
#ifdef EMC_USE_CMSIS_NN
    if (emc_cmsis_conv_s8(p, in, out, 0)) return;
#endif
    emc_conv_epilogue(p, &e);
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int rows_inside = iy0 >= 0 && iy0 + span_h < p->in_h;
        for (ox = 0; ox < out_w; ++ox, dst += out_c) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int8_t *x = col;
            if (rows_inside && ix0 >= 0 && ix0 + span_w < in_w) {      /* the window lies inside the input */
                const int8_t *src = in + (iy0 * in_w + ix0) * c;
                if (contiguous)
                    x = src;
                else if (rows_copy)
                    emc_copy_rows(col, src, kh, kw * c, row_step);
                else
                    emc_gather_border(p, in, iy0, ix0, col);             /* dilated columns: tap by tap */
            } else {
                emc_gather_border(p, in, iy0, ix0, col);
            }
            emc_dot_channels_s8(x, p->weights, kin, out_c, &e, dst);
        }
    }
}

/* One depthwise output channel of a window inside the input: sum over taps of x * w, no bounds checks. */
static int32_t emc_dw_inside(const emc_conv_params *p, const int8_t *x, const int8_t *w, int32_t acc)
{
    const int32_t step_x = p->dilation_w * p->in_c, step_y = p->dilation_h * p->in_w * p->in_c;
    int32_t ky, kx;
    for (ky = 0; ky < p->kernel_h; ++ky, x += step_y, w += p->kernel_w * p->out_c) {
        const int8_t *xs = x, *ws = w;
        for (kx = 0; kx < p->kernel_w; ++kx, xs += step_x, ws += p->out_c)
            acc += (int32_t)*xs * *ws;
    }
    return acc;
}

/* The same for a window that overlaps the padding: a tap outside adds in_zp * w, cancelling the folded bias. */
static int32_t emc_dw_border(const emc_conv_params *p, const int8_t *in, int32_t iy0, int32_t ix0, int32_t c,
                             const int8_t *w, int32_t acc)
{
    int32_t ky, kx;
    for (ky = 0; ky < p->kernel_h; ++ky) {
        const int32_t iy = iy0 + ky * p->dilation_h;
        for (kx = 0; kx < p->kernel_w; ++kx) {
            const int32_t ix = ix0 + kx * p->dilation_w;
            const int32_t wk = w[(ky * p->kernel_w + kx) * p->out_c];
            if (iy < 0 || iy >= p->in_h || ix < 0 || ix >= p->in_w)
                acc += p->in_zp * wk;
            else
                acc += (int32_t)in[(iy * p->in_w + ix) * p->in_c + c] * wk;
        }
    }
    return acc;
}

void emc_depthwise_conv2d_s8(const emc_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t span_h = (p->kernel_h - 1) * p->dilation_h, span_w = (p->kernel_w - 1) * p->dilation_w;
    int32_t oy, ox, c, m;
    emc_epilogue e;
#ifdef EMC_USE_CMSIS_NN
    if (emc_cmsis_conv_s8(p, in, out, 1)) return;
#endif
    emc_conv_epilogue(p, &e);
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        const int rows_inside = iy0 >= 0 && iy0 + span_h < p->in_h;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            const int inside = rows_inside && ix0 >= 0 && ix0 + span_w < p->in_w;
            const int8_t *x = inside ? in + (iy0 * p->in_w + ix0) * p->in_c : in;
            int8_t *dst = out + (oy * p->out_w + ox) * p->out_c;
            int32_t oc = 0;
            for (c = 0; c < p->in_c; ++c) {
                for (m = 0; m < p->depth_mult; ++m, ++oc) {
                    const int32_t acc = inside ? emc_dw_inside(p, x + c, p->weights + oc, p->kbias[oc])
                                               : emc_dw_border(p, in, iy0, ix0, c, p->weights + oc, p->kbias[oc]);
                    dst[oc] = emc_epilogue_s8(&e, acc, oc);
                }
            }
        }
    }
}
