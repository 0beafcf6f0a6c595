/* emc_nn dot products: the inner loops of convolutions and dense layers.
 *
 * The input zero point is already folded into the bias (see emc_conv_params.kbias), so a dot product is plain
 * sum(x[k] * w[k]) over int8 values with an int32 accumulator. Four output channels share each load of x.
 * With -DEMC_USE_ARM_DSP on a core with the DSP extension (__ARM_FEATURE_DSP), ACLE's __sxtb16 / __smlad do
 * two products per instruction; the sums are the same integers, so the results are identical.
 */
#include "emc_nn.h"

#if defined(EMC_USE_ARM_DSP) && defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define EMC_DSP 1

static inline int32_t emc_read4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, 4);   /* one unaligned LDR on Cortex-M4/M7 */
    return v;
}

/* Four int8 of a word as two pairs of int16: bytes (0, 2) and (1, 3). */
#define EMC_EVEN(v) __sxtb16(v)
#define EMC_ODD(v) __sxtb16((int32_t)(((uint32_t)(v) >> 8) | ((uint32_t)(v) << 24)))
#endif

void emc_dot4_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t stride, int32_t *acc)
{
    const int8_t *w0 = w, *w1 = w + stride, *w2 = w1 + stride, *w3 = w2 + stride;
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    int32_t k = 0;
#ifdef EMC_DSP
    for (; k + 4 <= n; k += 4) {
        const int32_t xv = emc_read4(x + k);
        const int16x2_t xe = EMC_EVEN(xv), xo = EMC_ODD(xv);
        int32_t wv = emc_read4(w0 + k);
        a0 = __smlad(xe, EMC_EVEN(wv), __smlad(xo, EMC_ODD(wv), a0));
        wv = emc_read4(w1 + k);
        a1 = __smlad(xe, EMC_EVEN(wv), __smlad(xo, EMC_ODD(wv), a1));
        wv = emc_read4(w2 + k);
        a2 = __smlad(xe, EMC_EVEN(wv), __smlad(xo, EMC_ODD(wv), a2));
        wv = emc_read4(w3 + k);
        a3 = __smlad(xe, EMC_EVEN(wv), __smlad(xo, EMC_ODD(wv), a3));
    }
#endif
    for (; k < n; ++k) {        /* compiles to 5 post-incremented loads and 4 multiply-accumulates per step */
        const int32_t xk = x[k];
        a0 += xk * w0[k];
        a1 += xk * w1[k];
        a2 += xk * w2[k];
        a3 += xk * w3[k];
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
}

int32_t emc_dot1_s8(const int8_t *x, const int8_t *w, int32_t n, int32_t acc)
{
    int32_t k = 0;
#ifdef EMC_DSP
    for (; k + 4 <= n; k += 4) {
        const int32_t xv = emc_read4(x + k), wv = emc_read4(w + k);
        acc = __smlad(EMC_EVEN(xv), EMC_EVEN(wv), __smlad(EMC_ODD(xv), EMC_ODD(wv), acc));
    }
#endif
    for (; k < n; ++k)
        acc += (int32_t)x[k] * w[k];
    return acc;
}

/* acc[0..n) of output channels oc.. through the epilogue into out[oc..]; kept out of line so the dot product's
 * caller stays small (its stack frame is what the model's deepest call chain adds up). */
static EMC_NOINLINE void emc_store(const emc_epilogue *e, const int32_t *acc, int32_t oc, int32_t n, int8_t *out)
{
    const int32_t *mult = e->mult + oc, *shift = e->shift + oc;
    const int32_t zp = e->out_zp, lo = e->act_min, hi = e->act_max;
    const int8_t *lut = e->lut;
    int32_t j;
    out += oc;
    for (j = 0; j < n; ++j) {
        const int8_t q = emc_requant8(acc[j], mult[j], shift[j], zp, lo, hi);
        out[j] = lut ? lut[(int32_t)q + 128] : q;
    }
}

void emc_dot_channels_s8(const int8_t *x, const int8_t *weights, int32_t n, int32_t channels,
                         const emc_epilogue *e, int8_t *out)
{
    int32_t oc, j, acc[4];
    for (oc = 0; oc + 4 <= channels; oc += 4) {
        for (j = 0; j < 4; ++j) acc[j] = e->kbias[oc + j];
        emc_dot4_s8(x, weights + oc * n, n, n, acc);
        emc_store(e, acc, oc, 4, out);
    }
    for (j = 0; oc + j < channels; ++j)
        acc[j] = emc_dot1_s8(x, weights + (oc + j) * n, n, e->kbias[oc + j]);
    emc_store(e, acc, oc, j, out);
}
