/* emc_nn's CMSIS-NN glue (only with -DEMC_USE_CMSIS_NN): emc's kernel parameters as CMSIS-NN s8 calls.
 * Each function returns 1 when CMSIS-NN computed the layer, 0 when the portable kernel must (e.g. dilation). */
#include "emc_nn.h"

#ifdef EMC_USE_CMSIS_NN
#include "arm_nnfunctions.h"

void *emc_cmsis_buf = 0;
int32_t emc_cmsis_buf_size = 0;

static void emc_cmsis_dims(cmsis_nn_dims *d, int32_t n, int32_t h, int32_t w, int32_t c)
{
    d->n = n; d->h = h; d->w = w; d->c = c;
}

static int emc_cmsis_done(arm_cmsis_nn_status status, const int8_t *lut, int32_t count, int8_t *out)
{
    if (status != ARM_CMSIS_NN_SUCCESS) return 0;
    if (lut) emc_lut_s8(count, lut, out, out);
    return 1;
}

/* What CMSIS-NN's conv and depthwise calls share: context, quantisation and dims of input, bias and output. */
static void emc_cmsis_layer(const emc_conv_params *p, cmsis_nn_context *ctx, cmsis_nn_per_channel_quant_params *quant,
                            cmsis_nn_dims *in_dims, cmsis_nn_dims *bias_dims, cmsis_nn_dims *out_dims)
{
    ctx->buf = emc_cmsis_buf;
    ctx->size = emc_cmsis_buf_size;
    quant->multiplier = (int32_t *)p->mult;
    quant->shift = (int32_t *)p->shift;
    emc_cmsis_dims(in_dims, 1, p->in_h, p->in_w, p->in_c);
    emc_cmsis_dims(bias_dims, 1, 1, 1, p->out_c);
    emc_cmsis_dims(out_dims, 1, p->out_h, p->out_w, p->out_c);
}

/* The fields cmsis_nn_conv_params and cmsis_nn_dw_conv_params both have. */
#define EMC_CMSIS_CONV_FIELDS(cp, p) do {                                               \
        memset(&(cp), 0, sizeof (cp));                                                  \
        (cp).input_offset = -(p)->in_zp; (cp).output_offset = (p)->out_zp;              \
        (cp).stride.h = (p)->stride_h; (cp).stride.w = (p)->stride_w;                   \
        (cp).padding.h = (p)->pad_top; (cp).padding.w = (p)->pad_left;                  \
        (cp).dilation.h = 1; (cp).dilation.w = 1;                                      \
        (cp).activation.min = (p)->act_min; (cp).activation.max = (p)->act_max;         \
    } while (0)

int emc_cmsis_conv_s8(const emc_conv_params *p, const int8_t *in, int8_t *out, int depthwise)
{
    cmsis_nn_context ctx;
    cmsis_nn_per_channel_quant_params quant;
    cmsis_nn_dims in_dims, filter_dims, bias_dims, out_dims;
    arm_cmsis_nn_status status;
    if (p->bias == NULL) return 0;
    if (!depthwise && p->gemm_cols != NULL) {
        emc_conv2d_pairs_s8(p, in, out);
        return 1;
    }
    if (p->dilation_h != 1 || p->dilation_w != 1) return 0;
    emc_cmsis_layer(p, &ctx, &quant, &in_dims, &bias_dims, &out_dims);
    if (depthwise) {
        cmsis_nn_dw_conv_params cp;
        EMC_CMSIS_CONV_FIELDS(cp, p);
        cp.ch_mult = p->depth_mult;
        emc_cmsis_dims(&filter_dims, 1, p->kernel_h, p->kernel_w, p->out_c);
        status = arm_depthwise_conv_wrapper_s8(&ctx, &cp, &quant, &in_dims, in, &filter_dims, p->weights,
                                               &bias_dims, p->bias, &out_dims, out);
    } else {
        cmsis_nn_conv_params cp;
        EMC_CMSIS_CONV_FIELDS(cp, p);
        emc_cmsis_dims(&filter_dims, p->out_c, p->kernel_h, p->kernel_w, p->in_c);
        status = arm_convolve_wrapper_s8(&ctx, &cp, &quant, &in_dims, in, &filter_dims, p->weights, &bias_dims,
                                         p->bias, &out_dims, out);
    }
    return emc_cmsis_done(status, p->lut, p->out_h * p->out_w * p->out_c, out);
}

/* Dense layers: arm_fully_connected_per_channel_s8 (rows = batches) where it needs no scratch (cores without
 * MVE), else a 1x1 convolution over a 1 x rows image. */
int emc_cmsis_dense_s8(const emc_dense_params *p, const int8_t *in, int8_t *out)
{
    cmsis_nn_context ctx;
    cmsis_nn_per_channel_quant_params quant;
    cmsis_nn_dims in_dims, filter_dims, bias_dims, out_dims;
    arm_cmsis_nn_status status;
    if (p->bias == NULL) return 0;
    ctx.buf = emc_cmsis_buf;
    ctx.size = emc_cmsis_buf_size;
    quant.multiplier = (int32_t *)p->mult;
    quant.shift = (int32_t *)p->shift;
    emc_cmsis_dims(&bias_dims, 1, 1, 1, p->out_features);
    emc_cmsis_dims(&filter_dims, p->in_features, 1, 1, p->out_features);
    if (arm_fully_connected_s8_get_buffer_size(&filter_dims) == 0) {
        cmsis_nn_fc_params fp;
        memset(&fp, 0, sizeof fp);
        fp.input_offset = -p->in_zp;
        fp.output_offset = p->out_zp;
        fp.activation.min = p->act_min; fp.activation.max = p->act_max;
        emc_cmsis_dims(&in_dims, p->rows, 1, 1, p->in_features);
        emc_cmsis_dims(&out_dims, p->rows, 1, 1, p->out_features);
        status = arm_fully_connected_per_channel_s8(&ctx, &fp, &quant, &in_dims, in, &filter_dims, p->weights,
                                                    &bias_dims, p->bias, &out_dims, out);
    } else {
        cmsis_nn_conv_params cp;
        memset(&cp, 0, sizeof cp);
        cp.input_offset = -p->in_zp;
        cp.output_offset = p->out_zp;
        cp.stride.h = 1; cp.stride.w = 1;
        cp.dilation.h = 1; cp.dilation.w = 1;
        cp.activation.min = p->act_min; cp.activation.max = p->act_max;
        emc_cmsis_dims(&in_dims, 1, 1, p->rows, p->in_features);
        emc_cmsis_dims(&filter_dims, p->out_features, 1, 1, p->in_features);
        emc_cmsis_dims(&out_dims, 1, 1, p->rows, p->out_features);
        status = arm_convolve_wrapper_s8(&ctx, &cp, &quant, &in_dims, in, &filter_dims, p->weights, &bias_dims,
                                         p->bias, &out_dims, out);
    }
    return emc_cmsis_done(status, p->lut, p->rows * p->out_features, out);
}

/* ---- scratch: what CMSIS-NN's own *_get_buffer_size functions ask for, layer by layer --------------------------- */
int32_t emc_cmsis_conv_buffer_size(const emc_conv_params *p, int depthwise)
{
    cmsis_nn_dims in_dims, filter_dims, out_dims;
    if (!depthwise && p->gemm_cols != NULL) return 0;             /* emc_conv2d_pairs_s8, its buffer in the arena */
    if (p->dilation_h != 1 || p->dilation_w != 1) return 0;       /* the portable kernel runs these */
    emc_cmsis_dims(&in_dims, 1, p->in_h, p->in_w, p->in_c);
    emc_cmsis_dims(&out_dims, 1, p->out_h, p->out_w, p->out_c);
    if (depthwise) {
        cmsis_nn_dw_conv_params cp;
        EMC_CMSIS_CONV_FIELDS(cp, p);
        cp.ch_mult = p->depth_mult;
        emc_cmsis_dims(&filter_dims, 1, p->kernel_h, p->kernel_w, p->out_c);
        return arm_depthwise_conv_wrapper_s8_get_buffer_size(&cp, &in_dims, &filter_dims, &out_dims);
    } else {
        cmsis_nn_conv_params cp;
        EMC_CMSIS_CONV_FIELDS(cp, p);
        emc_cmsis_dims(&filter_dims, p->out_c, p->kernel_h, p->kernel_w, p->in_c);
        return arm_convolve_wrapper_s8_get_buffer_size(&cp, &in_dims, &filter_dims, &out_dims);
    }
}

int32_t emc_cmsis_dense_buffer_size(const emc_dense_params *p)
{
    cmsis_nn_dims filter_dims;
    emc_cmsis_dims(&filter_dims, p->in_features, 1, 1, p->out_features);
    return arm_fully_connected_s8_get_buffer_size(&filter_dims);   /* else a 1x1 unit-stride convolution */
}

int32_t emc_cmsis_pool_buffer_size(const emc_pool_params *p, int average)
{
    return average ? arm_avgpool_s8_get_buffer_size(p->out_w, p->channels) : 0;
}
#else
typedef int emc_cmsis_unused;   /* ISO C wants a translation unit to declare something */
#endif
