/* emc_nn convolutions: 2-D convolution and depthwise convolution, int8 NHWC, per-channel requantisation.
 *
 * Convolution: per output pixel the kernel window is gathered once into the column buffer (padding taps read the
 * input zero point, which the folded bias cancels) -- or read in place when it is contiguous in the input --
 * then every output channel is one dot product of length kernel_h * kernel_w * in_c (emc_dot.c).
 * Depthwise: per output pixel the taps inside the input, four channels at a time; padding taps add in_zp * w.
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

/* The window of output pixel (oy, ox): in place when it lies inside the input and is contiguous there, else
 * gathered into the column buffer. Out of line to keep emc_conv2d_s8's stack frame small. */
static EMC_NOINLINE const int8_t *emc_window(const emc_conv_params *p, const int8_t *in, int32_t oy, int32_t ox)
{
    const int32_t c = p->in_c, kh = p->kernel_h, kw = p->kernel_w;
    const int32_t iy0 = oy * p->stride_h - p->pad_top, ix0 = ox * p->stride_w - p->pad_left;
    if (iy0 >= 0 && iy0 + (kh - 1) * p->dilation_h < p->in_h && ix0 >= 0 && ix0 + (kw - 1) * p->dilation_w < p->in_w) {
        const int8_t *src = in + (iy0 * p->in_w + ix0) * c;
        if (kh == 1 && (kw == 1 || p->dilation_w == 1))
            return src;                                           /* contiguous: read in place */
        if (kw == 1 || p->dilation_w == 1) {                      /* a kernel row is kw * in_c contiguous bytes */
            emc_copy_rows(p->col, src, kh, kw * c, p->dilation_h * p->in_w * c);
            return p->col;
        }
    }
    emc_gather_border(p, in, iy0, ix0, p->col);                   /* padding, or dilated columns: tap by tap */
    return p->col;
}

void emc_conv2d_s8(const emc_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t kin = p->kernel_h * p->kernel_w * p->in_c;
    int32_t oy, ox;
    emc_epilogue e;
#ifdef EMC_USE_CMSIS_NN
    if (emc_cmsis_conv_s8(p, in, out, 0)) return;
#endif
    emc_conv_epilogue(p, &e);
    for (oy = 0; oy < p->out_h; ++oy)
        for (ox = 0; ox < p->out_w; ++ox, out += p->out_c)
            emc_dot_channels_s8(emc_window(p, in, oy, ox), p->weights, kin, p->out_c, &e, out);
}

/* ---- depthwise ------------------------------------------------------------------------------------------------ *
 * Per output pixel the taps inside the input are the ranges [ky0, ky1) x [kx0, kx1); with depth multiplier 1 four
 * neighbouring channels share every tap's pointer arithmetic. Padding taps add in_zp * w (cancelling the folded
 * bias), only for border pixels. */
typedef struct {
    int32_t ky0, ky1, kx0, kx1, border;
    const int8_t *x, *w;          /* first valid tap's input pixel and weights (channel 0) */
} emc_dw_window;

static int32_t emc_tap_lo(int32_t i0, int32_t d)
{
    return i0 < 0 ? (-i0 + d - 1) / d : 0;
}

static int32_t emc_tap_hi(int32_t i0, int32_t d, int32_t k, int32_t n)
{
    const int32_t end = n > i0 ? (n - i0 + d - 1) / d : 0;
    return end < k ? end : k;
}

static void emc_dw_pixel(const emc_conv_params *p, const int8_t *in, int32_t iy0, int32_t ix0, emc_dw_window *win)
{
    win->ky0 = emc_tap_lo(iy0, p->dilation_h);
    win->ky1 = emc_tap_hi(iy0, p->dilation_h, p->kernel_h, p->in_h);
    win->kx0 = emc_tap_lo(ix0, p->dilation_w);
    win->kx1 = emc_tap_hi(ix0, p->dilation_w, p->kernel_w, p->in_w);
    win->border = win->ky0 > 0 || win->kx0 > 0 || win->ky1 < p->kernel_h || win->kx1 < p->kernel_w;
    if (win->ky1 <= win->ky0 || win->kx1 <= win->kx0) {
        win->ky1 = win->ky0; win->x = in;          /* no tap inside: padding only */
    } else {
        win->x = in + ((iy0 + win->ky0 * p->dilation_h) * p->in_w + ix0 + win->kx0 * p->dilation_w) * p->in_c;
    }
    win->w = p->weights + (win->ky0 * p->kernel_w + win->kx0) * p->out_c;
}

/* acc[0..n) += x[j] * w[j] over the valid taps, for n <= 4 channels: x, w at channel c of the first valid tap. */
static void emc_dw_taps(const emc_conv_params *p, const emc_dw_window *win, const int8_t *x, const int8_t *w,
                        int32_t n, int32_t *acc)
{
    const int32_t step_x = p->dilation_w * p->in_c, step_y = p->dilation_h * p->in_w * p->in_c;
    const int32_t wrow = p->kernel_w * p->out_c, taps_x = win->kx1 - win->kx0;
    int32_t ky, kx;
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    for (ky = win->ky0; ky < win->ky1; ++ky, x += step_y, w += wrow) {
        const int8_t *xs = x, *ws = w;
        if (n == 4) {
            for (kx = 0; kx < taps_x; ++kx, xs += step_x, ws += p->out_c) {
                a0 += (int32_t)xs[0] * ws[0];
                a1 += (int32_t)xs[1] * ws[1];
                a2 += (int32_t)xs[2] * ws[2];
                a3 += (int32_t)xs[3] * ws[3];
            }
        } else {
            for (kx = 0; kx < taps_x; ++kx, xs += step_x, ws += p->out_c)
                a0 += (int32_t)xs[0] * ws[0];
        }
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
}

/* acc[j] += in_zp * w[tap][oc + j] for the taps outside the input (border pixels only). */
static void emc_dw_padding(const emc_conv_params *p, const emc_dw_window *win, int32_t oc, int32_t n, int32_t *acc)
{
    int32_t ky, kx, j;
    for (ky = 0; ky < p->kernel_h; ++ky) {
        for (kx = 0; kx < p->kernel_w; ++kx) {
            const int8_t *w = p->weights + (ky * p->kernel_w + kx) * p->out_c + oc;
            if (ky >= win->ky0 && ky < win->ky1 && kx >= win->kx0 && kx < win->kx1) continue;
            for (j = 0; j < n; ++j) acc[j] += p->in_zp * w[j];
        }
    }
}

void emc_depthwise_conv2d_s8(const emc_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t mult = p->depth_mult, out_c = p->out_c;
    int32_t oy, ox, oc, j;
    int8_t *dst = out;
    emc_epilogue e;
    emc_dw_window win;
#ifdef EMC_USE_CMSIS_NN
    if (emc_cmsis_conv_s8(p, in, out, 1)) return;
#endif
    emc_conv_epilogue(p, &e);
    for (oy = 0; oy < p->out_h; ++oy) {
        for (ox = 0; ox < p->out_w; ++ox, dst += out_c) {
            emc_dw_pixel(p, in, oy * p->stride_h - p->pad_top, ox * p->stride_w - p->pad_left, &win);
            for (oc = 0; oc < out_c;) {
                /* four channels at once when they read four neighbouring input channels */
                const int32_t n = (mult == 1 && oc + 4 <= out_c) ? 4 : 1;
                int32_t acc[4];
                for (j = 0; j < 4; ++j) acc[j] = j < n ? p->kbias[oc + j] : 0;
                emc_dw_taps(p, &win, win.x + oc / mult, win.w + oc, n, acc);
                if (win.border) emc_dw_padding(p, &win, oc, n, acc);
                for (j = 0; j < n; ++j, ++oc) dst[oc] = emc_epilogue_s8(&e, acc[j], oc);
            }
        }
    }
}
