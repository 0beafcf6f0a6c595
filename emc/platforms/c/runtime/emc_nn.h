/* emc_nn: emc's portable int8 neural-network kernels (C99, no malloc, no floating point).
 *
 * Quantisation follows TF Lite Micro / CMSIS-NN: real = (q - zero_point) * scale for int8 activations,
 * symmetric per-channel int8 weights, int32 biases, and requantisation of int32 accumulators by a Q31
 * multiplier and a power-of-two shift (shift > 0 shifts left). Tensors are NHWC without the batch axis.
 * Kernels marked "in place" accept out == in.
 *
 * Define EMC_USE_CMSIS_NN (and put CMSIS-NN on the include path) to route depthwise convolutions, dense layers,
 * average pooling and same-shape add/mul through CMSIS-NN's s8 functions; results stay identical. Convolutions
 * then run emc_conv2d_pairs_s8 (emc_pairs.c), faster than CMSIS-NN's GEMM on a Cortex-M4 but with its weights
 * widened to int16 (twice their flash); max pooling stays emc's (four lanes per SSUB8/SEL on DSP cores).
 * Define EMC_USE_ARM_DSP on a core with the DSP extension (Cortex-M4/M7/M33) for ACLE __smlad dot products
 * (identical results). Portable C is the default. A generated model calls EMC_PROFILE_HOOK(k) after kernel k
 * when that macro names a function (per-kernel timing).
 */
#ifndef EMC_NN_H
#define EMC_NN_H

#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* round(x * mult * 2^(shift - 31)) the TF Lite Micro way (MultiplyByQuantizedMultiplier): a saturating left
 * shift, the rounding doubling high multiply, then a rounding right shift. The high multiply's
 * (ab + nudge) / 2^31 with truncation equals floor((ab + 2^30) / 2^31) for either sign of ab: one SMULL and a
 * 64-bit add on a Cortex-M. */
static inline int32_t emc_requantize(int32_t x, int32_t mult, int32_t shift)
{
    int32_t right = -shift, high, mask;
    if (shift > 0) {                            /* rare: a saturating left shift first */
        const int64_t v = (int64_t)x * ((int64_t)1 << shift);
        x = v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : (int32_t)v);
        right = 0;
    }
    if (x == INT32_MIN && mult == INT32_MIN)    /* the one product the doubling high multiply saturates */
        high = INT32_MAX;
    else
        high = (int32_t)(((int64_t)x * mult + ((int64_t)1 << 30)) >> 31);
    mask = (int32_t)(((uint32_t)1 << right) - 1u);
    return (high >> right) + ((high & mask) > (mask >> 1) + (high < 0) ? 1 : 0);
}

static inline int8_t emc_clamp8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* An int32 value requantised to int8: emc_requantize, plus the output zero point, clamped to [lo, hi]. */
static inline int8_t emc_requant8(int32_t x, int32_t mult, int32_t shift, int32_t zp, int32_t lo, int32_t hi)
{
    return emc_clamp8(emc_requantize(x, mult, shift) + zp, lo, hi);
}

/* ---- convolutions and dense ---------------------------------------------------------------------------- *
 * The portable kernels add the input zero point nowhere: conversion folds it into kbias = bias - in_zp * (sum of
 * the channel's weights), and window taps that fall in the padding read in_zp (gathered) or add in_zp * w, so
 * every accumulator equals bias + sum((x - in_zp) * w) exactly. `bias` (unfolded) is only kept for CMSIS-NN. */
typedef struct {
    int32_t in_h, in_w, in_c, out_h, out_w, out_c;
    int32_t kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
    int32_t depth_mult;            /* depthwise only: output channel c * depth_mult + m reads input channel c */
    int32_t in_zp, out_zp, act_min, act_max;
    const int8_t *weights;         /* conv: [out_c][kh][kw][in_c]; depthwise: [kh][kw][out_c] */
    const int32_t *kbias;          /* per output channel, the input zero point folded in */
    const int32_t *bias, *mult, *shift;   /* per output channel; bias NULL unless EMC_USE_CMSIS_NN */
    const int8_t *lut;             /* NULL, or 256 codes applied after requantisation: out = lut[q + 128] */
    int8_t *col;                   /* conv: a column buffer of kernel_h * kernel_w * in_c bytes; NULL when every
                                      window lies inside the input and is contiguous there (1x1, 1xN) */
    int8_t *gemm_cols;             /* CMSIS-NN conv only, else NULL: arena bytes no live tensor uses */
    int32_t gemm_taps;             /* then (cmsis.pairs_buffer_bytes), for emc_conv2d_pairs_s8; kh * kw * in_c */
    const int32_t *gemm_pairs;     /* rounded up to a multiple of 4; the weights as words of two int16 */
} emc_conv_params;

void emc_conv2d_s8(const emc_conv_params *p, const int8_t *in, int8_t *out);
void emc_depthwise_conv2d_s8(const emc_conv_params *p, const int8_t *in, int8_t *out);
/* Transposed conv (emc_transpose.c): weights [out_c][kh][kw][in_c]; output pixel (oy, ox) is pixel
 * (oy + pad_top, ox + pad_left) of the full (in_h - 1) * stride_h + kernel_h rows scatter; pads may be negative. */
void emc_conv2d_transpose_s8(const emc_conv_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t rows, in_features, out_features;
    int32_t in_zp, out_zp, act_min, act_max;
    const int8_t *weights;         /* [out_features][in_features] */
    const int32_t *kbias;          /* bias - in_zp * sum of the row's weights */
    const int32_t *bias, *mult, *shift;   /* bias NULL unless EMC_USE_CMSIS_NN */
    const int8_t *lut;
} emc_dense_params;

void emc_dense_s8(const emc_dense_params *p, const int8_t *in, int8_t *out);

#if defined(__GNUC__)
#define EMC_NOINLINE __attribute__((noinline))
#else
#define EMC_NOINLINE
#endif

/* What turns a folded int32 accumulator into an output code: per-channel requantisation, clamp, optional table. */
typedef struct {
    const int32_t *kbias, *mult, *shift;
    int32_t out_zp, act_min, act_max;
    const int8_t *lut;
} emc_epilogue;

static inline int8_t emc_epilogue_s8(const emc_epilogue *e, int32_t acc, int32_t oc)
{
    const int8_t q = emc_requant8(acc, e->mult[oc], e->shift[oc], e->out_zp, e->act_min, e->act_max);
    return e->lut ? e->lut[(int32_t)q + 128] : q;
}

/* Dot products (emc_dot.c): acc[j] += sum_k x[k] * w[j * stride + k] for j < 4; one channel; and every output
 * channel of a pixel (weights [channels][n]) through the epilogue into out[0..channels). */
void emc_dot4_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t stride, int32_t *acc);
int32_t emc_dot1_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t acc);
void emc_dot_channels_s8(const int8_t *x, const int8_t *weights, int32_t n, int32_t channels,
                         const emc_epilogue *e, int8_t *out);

typedef struct {
    int32_t count, channels, in_zp, out_zp;
    const int8_t *weights;         /* one per channel */
    const int32_t *bias, *mult, *shift;
} emc_channel_scale_params;

void emc_channel_scale_s8(const emc_channel_scale_params *p, const int8_t *in, int8_t *out);   /* in place */

/* ---- pooling ------------------------------------------------------------------------------------------------ */
typedef struct {
    int32_t in_h, in_w, channels, out_h, out_w;
    int32_t pool_h, pool_w, stride_h, stride_w, pad_top, pad_left;
} emc_pool_params;

void emc_max_pool_s8(const emc_pool_params *p, const int8_t *in, int8_t *out);
void emc_avg_pool_s8(const emc_pool_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t in_h, in_w, channels, in_zp, out_zp, mult, shift;
} emc_global_pool_params;

void emc_global_max_pool_s8(const emc_global_pool_params *p, const int8_t *in, int8_t *out);
void emc_global_avg_pool_s8(const emc_global_pool_params *p, const int8_t *in, int8_t *out);

/* ---- element-wise and concatenation (inputs broadcast over 4-D output dims through element strides) ---- */
typedef struct {
    int32_t n, dims[4];
    const int32_t *strides;        /* n x 4, 0 on broadcast axes */
    const int32_t *in_zp, *in_mult, *in_shift, *sign;
    int32_t left_shift, out_mult, out_shift, out_zp;
} emc_add_params;

void emc_add_s8(const emc_add_params *p, const int8_t *const *in, int8_t *out);     /* in place */

typedef struct {
    int32_t dims[4];
    const int32_t *strides;        /* 2 x 4 */
    const int32_t *in_zp;
    int32_t out_mult, out_shift, out_zp;
} emc_mul_params;

void emc_mul_s8(const emc_mul_params *p, const int8_t *const *in, int8_t *out);     /* in place */

typedef struct {
    int32_t n, is_max, dims[4];
    const int32_t *strides, *in_zp, *in_mult, *in_shift;
    int32_t out_zp;
} emc_maxmin_params;

void emc_maxmin_s8(const emc_maxmin_params *p, const int8_t *const *in, int8_t *out);   /* in place */

typedef struct {
    int32_t n, outer;
    const int32_t *inner, *same, *in_zp, *in_mult, *in_shift;
    int32_t out_zp;
} emc_concat_params;

void emc_concat_s8(const emc_concat_params *p, const int8_t *const *in, int8_t *out);

/* ---- activations ------------------------------------------------------------------------------------------ */
typedef struct {
    int32_t count, in_zp, out_zp, mult, shift, act_min, act_max;
} emc_requant_params;

void emc_requant_clamp_s8(const emc_requant_params *p, const int8_t *in, int8_t *out);   /* relu, relu6; in place */

typedef struct {
    int32_t count, period, in_zp, out_zp, mult_pos, shift_pos, mult_neg, shift_neg;
    const int8_t *alpha;           /* prelu: period slopes; leaky relu: NULL (the slope is in mult_neg) */
} emc_leaky_params;

void emc_leaky_relu_s8(const emc_leaky_params *p, const int8_t *in, int8_t *out);    /* in place */
void emc_prelu_s8(const emc_leaky_params *p, const int8_t *in, int8_t *out);         /* in place */
void emc_lut_s8(int32_t count, const int8_t *table, const int8_t *in, int8_t *out);  /* in place */
/* softmax over rows of depth values; table[d] = round(exp(-scale * d) * 2^16); output scale 1/recip, zp -128 */
void emc_softmax_s8(int32_t rows, int32_t depth, int32_t recip, const int32_t *table, const int8_t *in,
                    int8_t *out);   /* in place */

/* ---- recurrent layers (emc_recurrent.c) ---------------------------------------------------------------- */
typedef struct {
    int32_t steps, features, units, gates;
    int32_t cell;                  /* 0 SimpleRNN, 1 GRU (reset_after), 2 LSTM; gates 1, 3 (z, r, h), 4 (i, f, c, o) */
    int32_t return_sequences, in_zp, out_zp, out_mult, out_shift;   /* out: h (Q0.15) requantised to int8 */
    const int8_t *w_x, *w_h;       /* [gates * units][features], [gates * units][units] */
    const int32_t *bias_x, *bias_h, *mult_x, *shift_x, *mult_h, *shift_h;   /* per gate row; to Q3.12 */
    const int16_t *sigmoid, *tanh; /* 513 Q0.15 entries over [-8, 8] */
    int16_t *work;                 /* (gates + 2) * units: h, c (GRU: candidate h part), gate pre-activations */
} emc_rnn_params;

void emc_rnn_s8(const emc_rnn_params *p, const int8_t *in, int8_t *out);

/* ---- data movement --------------------------------------------------------------------------------------- */
typedef struct {
    int32_t in_h, in_w, channels, out_h, out_w, top, left, value;   /* pad: value fills; crop: value unused */
} emc_window_params;

void emc_pad_s8(const emc_window_params *p, const int8_t *in, int8_t *out);
void emc_crop_s8(const emc_window_params *p, const int8_t *in, int8_t *out);

typedef struct {
    int32_t in_h, in_w, channels, factor_h, factor_w;
} emc_upsample_params;

void emc_upsample_s8(const emc_upsample_params *p, const int8_t *in, int8_t *out);

#ifdef EMC_USE_CMSIS_NN
/* Scratch memory for CMSIS-NN kernels, set by the generated model before it runs. */
extern void *emc_cmsis_buf;
extern int32_t emc_cmsis_buf_size;
/* emc_cmsis.c: 1 when CMSIS-NN computed the layer, 0 when the portable kernel must. */
int emc_cmsis_conv_s8(const emc_conv_params *p, const int8_t *in, int8_t *out, int depthwise);
int emc_cmsis_dense_s8(const emc_dense_params *p, const int8_t *in, int8_t *out);
/* Scratch bytes CMSIS-NN's *_get_buffer_size functions ask for one layer (the generated
 * <name>_cmsis_scratch_bytes() takes their maximum over the model). */
int32_t emc_cmsis_conv_buffer_size(const emc_conv_params *p, int depthwise);
int32_t emc_cmsis_dense_buffer_size(const emc_dense_params *p);
int32_t emc_cmsis_pool_buffer_size(const emc_pool_params *p, int average);
/* emc_pairs.c: a convolution with gemm_cols set, two output pixels by four channels at a time (faster than
 * CMSIS-NN's GEMM on Cortex-M4/M7). */
void emc_conv2d_pairs_s8(const emc_conv_params *p, const int8_t *in, int8_t *out);
#endif

#ifdef __cplusplus
}
#endif

#endif /* EMC_NN_H */
