/* emc_nn dense layers (on the last axis) and stand-alone per-channel affine ops (batch norm, rescale). */
#include "emc_nn.h"

#ifdef EMC_USE_CMSIS_NN
#include "arm_nnfunctions.h"
#endif

void emc_dense_s8(const emc_dense_params *p, const int8_t *in, int8_t *out)
{
    int32_t r, o, i;
#ifdef EMC_USE_CMSIS_NN
    {   /* a dense layer with per-channel weights = a 1x1 convolution over a 1 x rows image */
        cmsis_nn_context ctx;
        cmsis_nn_conv_params cp;
        cmsis_nn_per_channel_quant_params quant;
        cmsis_nn_dims in_dims, filter_dims, bias_dims, out_dims;
        memset(&cp, 0, sizeof cp);
        ctx.buf = emc_cmsis_buf;
        ctx.size = emc_cmsis_buf_size;
        cp.input_offset = -p->in_zp;
        cp.output_offset = p->out_zp;
        cp.stride.h = 1; cp.stride.w = 1;
        cp.dilation.h = 1; cp.dilation.w = 1;
        cp.activation.min = p->act_min; cp.activation.max = p->act_max;
        quant.multiplier = (int32_t *)p->mult;
        quant.shift = (int32_t *)p->shift;
        in_dims.n = 1; in_dims.h = 1; in_dims.w = p->rows; in_dims.c = p->in_features;
        filter_dims.n = p->out_features; filter_dims.h = 1; filter_dims.w = 1; filter_dims.c = p->in_features;
        bias_dims.n = 1; bias_dims.h = 1; bias_dims.w = 1; bias_dims.c = p->out_features;
        out_dims.n = 1; out_dims.h = 1; out_dims.w = p->rows; out_dims.c = p->out_features;
        if (arm_convolve_wrapper_s8(&ctx, &cp, &quant, &in_dims, in, &filter_dims, p->weights, &bias_dims, p->bias,
                                    &out_dims, out) == ARM_CMSIS_NN_SUCCESS) {
            if (p->lut) emc_lut_s8(p->rows * p->out_features, p->lut, out, out);
            return;
        }
    }
#endif
    for (r = 0; r < p->rows; ++r) {
        const int8_t *src = in + r * p->in_features;
        int8_t *dst = out + r * p->out_features;
        for (o = 0; o < p->out_features; ++o) {
            const int8_t *w = p->weights + o * p->in_features;
            int32_t acc = p->bias[o];
            int8_t q;
            for (i = 0; i < p->in_features; ++i)
                acc += ((int32_t)src[i] - p->in_zp) * w[i];
            q = emc_requant8(acc, p->mult[o], p->shift[o], p->out_zp, p->act_min, p->act_max);
            dst[o] = p->lut ? p->lut[(int32_t)q + 128] : q;
        }
    }
}

void emc_channel_scale_s8(const emc_channel_scale_params *p, const int8_t *in, int8_t *out)
{
    int32_t i, c = 0;
    for (i = 0; i < p->count; ++i) {
        int32_t acc = ((int32_t)in[i] - p->in_zp) * p->weights[c] + p->bias[c];
        out[i] = emc_requant8(acc, p->mult[c], p->shift[c], p->out_zp, -128, 127);
        if (++c == p->channels) c = 0;
    }
}
