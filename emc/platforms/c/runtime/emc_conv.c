/* emc_nn convolutions: 2-D convolution and depthwise convolution, int8 NHWC, per-channel requantisation. */
#include "emc_nn.h"

#ifdef EMC_USE_CMSIS_NN
#include "arm_nnfunctions.h"

void *emc_cmsis_buf = 0;
int32_t emc_cmsis_buf_size = 0;

static void emc_cmsis_conv_common(const emc_conv_params *p, cmsis_nn_dims *in_dims, cmsis_nn_dims *out_dims,
                                  cmsis_nn_per_channel_quant_params *quant)
{
    in_dims->n = 1; in_dims->h = p->in_h; in_dims->w = p->in_w; in_dims->c = p->in_c;
    out_dims->n = 1; out_dims->h = p->out_h; out_dims->w = p->out_w; out_dims->c = p->out_c;
    quant->multiplier = (int32_t *)p->mult;
    quant->shift = (int32_t *)p->shift;
}
#endif

static int8_t emc_finish(int32_t acc, const int32_t *mult, const int32_t *shift, int32_t oc,
                         int32_t out_zp, int32_t act_min, int32_t act_max, const int8_t *lut)
{
    int8_t q = emc_requant8(acc, mult[oc], shift[oc], out_zp, act_min, act_max);
    return lut ? lut[(int32_t)q + 128] : q;
}

void emc_conv2d_s8(const emc_conv_params *p, const int8_t *in, int8_t *out)
{
    int32_t oy, ox, oc, ky, kx, ic;
    const int32_t kin = p->kernel_h * p->kernel_w * p->in_c;
#ifdef EMC_USE_CMSIS_NN
    if (p->dilation_h == 1 && p->dilation_w == 1) {
        cmsis_nn_context ctx;
        cmsis_nn_conv_params cp;
        cmsis_nn_per_channel_quant_params quant;
        cmsis_nn_dims in_dims, filter_dims, bias_dims, out_dims;
        memset(&cp, 0, sizeof cp);
        ctx.buf = emc_cmsis_buf;
        ctx.size = emc_cmsis_buf_size;
        cp.input_offset = -p->in_zp;
        cp.output_offset = p->out_zp;
        cp.stride.h = p->stride_h; cp.stride.w = p->stride_w;
        cp.padding.h = p->pad_top; cp.padding.w = p->pad_left;
        cp.dilation.h = 1; cp.dilation.w = 1;
        cp.activation.min = p->act_min; cp.activation.max = p->act_max;
        emc_cmsis_conv_common(p, &in_dims, &out_dims, &quant);
        filter_dims.n = p->out_c; filter_dims.h = p->kernel_h; filter_dims.w = p->kernel_w; filter_dims.c = p->in_c;
        bias_dims.n = 1; bias_dims.h = 1; bias_dims.w = 1; bias_dims.c = p->out_c;
        if (arm_convolve_wrapper_s8(&ctx, &cp, &quant, &in_dims, in, &filter_dims, p->weights, &bias_dims, p->bias,
                                    &out_dims, out) == ARM_CMSIS_NN_SUCCESS) {
            if (p->lut) emc_lut_s8(p->out_h * p->out_w * p->out_c, p->lut, out, out);
            return;
        }
    }
#endif
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int8_t *dst = out + (oy * p->out_w + ox) * p->out_c;
            for (oc = 0; oc < p->out_c; ++oc) {
                const int8_t *w = p->weights + oc * kin;
                int32_t acc = p->bias[oc];
                for (ky = 0; ky < p->kernel_h; ++ky) {
                    const int32_t iy = iy0 + ky * p->dilation_h;
                    if (iy < 0 || iy >= p->in_h) continue;
                    for (kx = 0; kx < p->kernel_w; ++kx) {
                        const int32_t ix = ix0 + kx * p->dilation_w;
                        const int8_t *src, *wk;
                        if (ix < 0 || ix >= p->in_w) continue;
                        src = in + (iy * p->in_w + ix) * p->in_c;
                        wk = w + (ky * p->kernel_w + kx) * p->in_c;
                        for (ic = 0; ic < p->in_c; ++ic)
                            acc += ((int32_t)src[ic] - p->in_zp) * wk[ic];
                    }
                }
                dst[oc] = emc_finish(acc, p->mult, p->shift, oc, p->out_zp, p->act_min, p->act_max, p->lut);
            }
        }
    }
}

void emc_depthwise_conv2d_s8(const emc_conv_params *p, const int8_t *in, int8_t *out)
{
    int32_t oy, ox, c, m, ky, kx;
#ifdef EMC_USE_CMSIS_NN
    if (p->dilation_h == 1 && p->dilation_w == 1) {
        cmsis_nn_context ctx;
        cmsis_nn_dw_conv_params cp;
        cmsis_nn_per_channel_quant_params quant;
        cmsis_nn_dims in_dims, filter_dims, bias_dims, out_dims;
        memset(&cp, 0, sizeof cp);
        ctx.buf = emc_cmsis_buf;
        ctx.size = emc_cmsis_buf_size;
        cp.input_offset = -p->in_zp;
        cp.output_offset = p->out_zp;
        cp.ch_mult = p->depth_mult;
        cp.stride.h = p->stride_h; cp.stride.w = p->stride_w;
        cp.padding.h = p->pad_top; cp.padding.w = p->pad_left;
        cp.dilation.h = 1; cp.dilation.w = 1;
        cp.activation.min = p->act_min; cp.activation.max = p->act_max;
        emc_cmsis_conv_common(p, &in_dims, &out_dims, &quant);
        filter_dims.n = 1; filter_dims.h = p->kernel_h; filter_dims.w = p->kernel_w; filter_dims.c = p->out_c;
        bias_dims.n = 1; bias_dims.h = 1; bias_dims.w = 1; bias_dims.c = p->out_c;
        if (arm_depthwise_conv_wrapper_s8(&ctx, &cp, &quant, &in_dims, in, &filter_dims, p->weights, &bias_dims,
                                          p->bias, &out_dims, out) == ARM_CMSIS_NN_SUCCESS) {
            if (p->lut) emc_lut_s8(p->out_h * p->out_w * p->out_c, p->lut, out, out);
            return;
        }
    }
#endif
    for (oy = 0; oy < p->out_h; ++oy) {
        const int32_t iy0 = oy * p->stride_h - p->pad_top;
        for (ox = 0; ox < p->out_w; ++ox) {
            const int32_t ix0 = ox * p->stride_w - p->pad_left;
            int8_t *dst = out + (oy * p->out_w + ox) * p->out_c;
            for (c = 0; c < p->in_c; ++c) {
                for (m = 0; m < p->depth_mult; ++m) {
                    const int32_t oc = c * p->depth_mult + m;
                    int32_t acc = p->bias[oc];
                    for (ky = 0; ky < p->kernel_h; ++ky) {
                        const int32_t iy = iy0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= p->in_h) continue;
                        for (kx = 0; kx < p->kernel_w; ++kx) {
                            const int32_t ix = ix0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= p->in_w) continue;
                            acc += ((int32_t)in[(iy * p->in_w + ix) * p->in_c + c] - p->in_zp)
                                   * p->weights[(ky * p->kernel_w + kx) * p->out_c + oc];
                        }
                    }
                    dst[oc] = emc_finish(acc, p->mult, p->shift, oc, p->out_zp, p->act_min, p->act_max, p->lut);
                }
            }
        }
    }
}
