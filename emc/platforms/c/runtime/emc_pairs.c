/* emc_nn's pair GEMM for convolutions in CMSIS-NN builds (-DEMC_USE_CMSIS_NN): faster than CMSIS-NN's own s8 GEMM.
 *
 * Two output pixels at a time, their windows gathered, widened to int16 and interleaved in gemm_cols; the weights
 * come widened at conversion (gemm_pairs), so the inner loop is two loads of windows, four of weights and eight
 * SMLADs per pair of taps, with no sign extension and (the zero point being folded into kbias) no weight sums.
 * Each group of four taps is stored as the int16 order (0, 2, 1, 3), the one SXTB16 gives. Requantisation takes a
 * shortcut for the usual positive multiplier and right shift (one SMLAL and two shifts, the same integers as
 * emc_requantize); other channels go through emc_requantize.
 */
#include "emc_nn.h"

#ifdef EMC_USE_CMSIS_NN
#if defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define EMC_SMLAD(x, w, acc) __smlad((x), (w), (acc))
#define EMC_WIDEN_EVEN(v) __sxtb16(v)
#define EMC_WIDEN_ODD(v) __sxtb16((int32_t)(((uint32_t)(v) >> 8) | ((uint32_t)(v) << 24)))
#else
static inline int32_t emc_smlad(int32_t x, int32_t w, int32_t acc)
{
    return acc + (int32_t)(int16_t)x * (int16_t)w + (int32_t)(int16_t)((uint32_t)x >> 16) * (int16_t)((uint32_t)w >> 16);
}
static inline int32_t emc_pack16(int32_t lo, int32_t hi)
{
    return (int32_t)(((uint32_t)(uint16_t)(int16_t)lo) | ((uint32_t)(uint16_t)(int16_t)hi << 16));
}
#define EMC_SMLAD(x, w, acc) emc_smlad((x), (w), (acc))
#define EMC_WIDEN_EVEN(v) emc_pack16((int8_t)(v), (int8_t)((uint32_t)(v) >> 16))
#define EMC_WIDEN_ODD(v) emc_pack16((int8_t)((uint32_t)(v) >> 8), (int8_t)((uint32_t)(v) >> 24))
#endif

/* Window of output pixel (oy, ox) into dst, [kh][kw][in_c] bytes, in_zp where it lies in the padding. */
static void emc_pairs_gather(const emc_conv_params *p, const int8_t *in, int32_t oy, int32_t ox, int8_t *dst)
{
    const int32_t x0 = ox * p->stride_w - p->pad_left, row = p->kernel_w * p->in_c;
    int32_t ky, kx;
    for (ky = 0; ky < p->kernel_h; ++ky, dst += row) {
        const int32_t y = oy * p->stride_h - p->pad_top + ky * p->dilation_h;
        if (y < 0 || y >= p->in_h) {
            memset(dst, (int8_t)p->in_zp, (size_t)row);
        } else if (p->dilation_w == 1 && x0 >= 0 && x0 + p->kernel_w <= p->in_w) {
            memcpy(dst, in + (y * p->in_w + x0) * p->in_c, (size_t)row);
        } else {
            for (kx = 0; kx < p->kernel_w; ++kx) {
                const int32_t x = x0 + kx * p->dilation_w;
                if (x < 0 || x >= p->in_w) memset(dst + kx * p->in_c, (int8_t)p->in_zp, (size_t)p->in_c);
                else memcpy(dst + kx * p->in_c, in + (y * p->in_w + x) * p->in_c, (size_t)p->in_c);
            }
        }
    }
}

/* The gathered window of one pixel (taps bytes, a multiple of 4) widened into slot r of the interleaved words. */
static void emc_pairs_widen(const int8_t *window, int32_t taps, int32_t *words, int32_t r)
{
    int32_t k;
    words += r;
    for (k = 0; k < taps; k += 4, words += 4) {
        int32_t v;
        memcpy(&v, window + k, 4);
        words[0] = EMC_WIDEN_EVEN(v);
        words[2] = EMC_WIDEN_ODD(v);
    }
}

/* requantize(a, m, -(right1 + 1)) + zp for m > 0 and 1 <= right1 <= 22, given hi_up = 2^(right1 - 1) + zp * 2^right1:
 * floor((a * m + 2^30 + 2^(31 + right1) - [a < 0] * 2^31 + zp * 2^(32 + right1)) / 2^(32 + right1)), the closed form of
 * fixedpoint.requantize with the zero point inside, as one SMLAL onto a constant whose words depend only on a's sign,
 * and a shift: the same integers as emc_requantize (right1 <= 22 keeps the high word in int32). */
static inline int32_t emc_pairs_requantize(int32_t a, int32_t m, int32_t hi_up, int32_t right1)
{
    const uint32_t sign = (uint32_t)(a >> 31);
    const uint64_t start = ((uint64_t)(uint32_t)(hi_up + (int32_t)sign) << 32) | (0x40000000u ^ (sign & 0x80000000u));
    return (int32_t)(((int64_t)start + (int64_t)a * m) >> 32) >> right1;
}

#if defined(__ARM_FEATURE_SAT)
#include <arm_acle.h>
#define EMC_SAT8(v) __ssat((v), 8)
#else
#define EMC_SAT8(v) ((v) < -128 ? -128 : ((v) > 127 ? 127 : (v)))
#endif

/* emc_pairs_requantize's (m, hi_up, right1) of every output channel into req (3 words each); 1 when every channel
 * takes the shortcut and the layer has no table and clamps to all of int8 (then emc_pairs_store_fast serves it). */
static int emc_pairs_prepare(const emc_conv_params *p, int32_t *req)
{
    int32_t oc, fast = p->lut == NULL && p->act_min == -128 && p->act_max == 127;
    for (oc = 0; oc < p->out_c; ++oc, req += 3) {
        const int32_t m = p->mult[oc], s = p->shift[oc], right1 = -s - 1;
        if (m > 0 && right1 >= 1 && right1 <= 22) {
            req[0] = m;
            req[1] = ((int32_t)1 << (right1 - 1)) + p->out_zp * ((int32_t)1 << right1);
            req[2] = right1;
        } else {
            fast = 0;
        }
    }
    return fast;
}

/* Channels oc.. (n <= 4) of two pixels, acc[j] and acc[4 + j], as codes into out0[j] and out1[j], the fast way. */
static EMC_NOINLINE void emc_pairs_store_fast(const int32_t *req, const int32_t *acc, int32_t n, int8_t *out0,
                                              int8_t *out1)
{
    int32_t j;
    for (j = 0; j < n; ++j, req += 3) {
        const int32_t m = req[0], hi_up = req[1], right1 = req[2];
        out1[j] = (int8_t)EMC_SAT8(emc_pairs_requantize(acc[j + 4], m, hi_up, right1));
        out0[j] = (int8_t)EMC_SAT8(emc_pairs_requantize(acc[j], m, hi_up, right1));
    }
}

/* The same for any layer: emc_requantize, zero point, clamp, table. */
static EMC_NOINLINE void emc_pairs_store(const emc_conv_params *p, const int32_t *acc, int32_t oc, int32_t n,
                                         int8_t *out0, int8_t *out1)
{
    int32_t j, r;
    for (j = 0; j < n; ++j) {
        for (r = 1; r >= 0; --r) {
            int32_t q = emc_requantize(acc[j + 4 * r], p->mult[oc + j], p->shift[oc + j]) + p->out_zp;
            q = q < p->act_min ? p->act_min : (q > p->act_max ? p->act_max : q);
            (r ? out1 : out0)[j] = p->lut ? p->lut[q + 128] : (int8_t)q;
        }
    }
}

/* acc[j] (pixel 0) and acc[4 + j] (pixel 1) += one word of taps of x (x[0], x[1]) . weights w[j], j < 4. */
#define EMC_PAIRS_STEP(x, w) do {                                                                   \
        const int32_t x0_ = (x)[0], x1_ = (x)[1];                                                   \
        int32_t v_ = (w)[0];                                                                        \
        a0 = EMC_SMLAD(x0_, v_, a0); b0 = EMC_SMLAD(x1_, v_, b0);                                   \
        v_ = (w)[1]; a1 = EMC_SMLAD(x0_, v_, a1); b1 = EMC_SMLAD(x1_, v_, b1);                      \
        v_ = (w)[2]; a2 = EMC_SMLAD(x0_, v_, a2); b2 = EMC_SMLAD(x1_, v_, b2);                      \
        v_ = (w)[3]; a3 = EMC_SMLAD(x0_, v_, a3); b3 = EMC_SMLAD(x1_, v_, b3);                      \
    } while (0)

/* GCC's first scheduling pass hoists the loads of the unrolled loop and spills accumulators (0.97 -> 0.89
 * instructions per MAC without it). */
#if defined(__GNUC__) && !defined(__clang__)
#define EMC_PAIRS_NO_PRESCHEDULE __attribute__((optimize("no-schedule-insns")))
#else
#define EMC_PAIRS_NO_PRESCHEDULE
#endif

/* Four channels of two pixels: acc[j] (pixel 0) and acc[4 + j] (pixel 1) += window . weights over `pairs` words
 * (even: gemm_taps is a multiple of 4), four words a turn, then two. */
static EMC_NOINLINE EMC_PAIRS_NO_PRESCHEDULE void emc_pairs_block4(const int32_t *x, const int32_t *w, int32_t pairs, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    int32_t b0 = acc[4], b1 = acc[5], b2 = acc[6], b3 = acc[7];
    const int32_t *const end = x + 2 * pairs, *const end4 = x + 2 * (pairs & ~3);
    for (; x != end4; x += 8, w += 16) {
        EMC_PAIRS_STEP(x, w);
        EMC_PAIRS_STEP(x + 2, w + 4);
        EMC_PAIRS_STEP(x + 4, w + 8);
        EMC_PAIRS_STEP(x + 6, w + 12);
    }
    if (x != end) {
        EMC_PAIRS_STEP(x, w);
        EMC_PAIRS_STEP(x + 2, w + 4);
    }
    acc[0] = a0; acc[1] = a1; acc[2] = a2; acc[3] = a3;
    acc[4] = b0; acc[5] = b1; acc[6] = b2; acc[7] = b3;
}

/* One channel of two pixels: acc[0] and acc[4]. */
static void emc_pairs_block1(const int32_t *x, const int32_t *w, int32_t pairs, int32_t *acc)
{
    int32_t a = acc[0], b = acc[4];
    for (; pairs > 0; --pairs, x += 2, ++w) {
        a = EMC_SMLAD(x[0], *w, a);
        b = EMC_SMLAD(x[1], *w, b);
    }
    acc[0] = a; acc[4] = b;
}

/* Every output channel of the two pixels in words into out (and out + out_c when two; without a second pixel its
 * codes go to out first and are overwritten); req and fast from emc_pairs_prepare. */
static void emc_pairs_channels(const emc_conv_params *p, const int32_t *words, int two, const int32_t *req, int fast,
                               int8_t *out)
{
    const int32_t pairs = p->gemm_taps / 2, out_c = p->out_c;
    const int32_t *w = p->gemm_pairs;
    int8_t *out1 = two ? out + out_c : out;
    int32_t oc = 0, j, n, acc[8];
    for (; oc < out_c; oc += n) {
        n = oc + 4 <= out_c ? 4 : 1;
        for (j = 0; j < n; ++j) acc[j] = acc[4 + j] = p->kbias[oc + j];
        if (n == 4) emc_pairs_block4(words, w, pairs, acc);
        else emc_pairs_block1(words, w, pairs, acc);
        w += n * pairs;
        if (fast) emc_pairs_store_fast(req + 3 * oc, acc, n, out + oc, out1 + oc);
        else emc_pairs_store(p, acc, oc, n, out + oc, out1 + oc);
    }
}

/* The whole convolution, two output pixels at a time; gemm_cols holds 4 * taps bytes of interleaved int16 words,
 * taps bytes of one gathered int8 window, then 3 words per output channel for emc_pairs_prepare. */
void emc_conv2d_pairs_s8(const emc_conv_params *p, const int8_t *in, int8_t *out)
{
    const int32_t taps = p->gemm_taps, window = p->kernel_h * p->kernel_w * p->in_c;
    const int32_t pixels = p->out_h * p->out_w;
    int32_t *words = (int32_t *)(void *)p->gemm_cols;
    int8_t *stage = p->gemm_cols + 4 * taps;
    int32_t *req = (int32_t *)(void *)(p->gemm_cols + 5 * taps);
    const int fast = emc_pairs_prepare(p, req);
    int32_t i, r = 0;
    memset(stage + window, 0, (size_t)(taps - window));            /* padding taps meet zero weights */
    for (i = 0; i < pixels; ++i) {
        emc_pairs_gather(p, in, i / p->out_w, i % p->out_w, stage);
        emc_pairs_widen(stage, taps, words, r);
        if (++r == 2) {
            emc_pairs_channels(p, words, 1, req, fast, out + (i - 1) * p->out_c);
            r = 0;
        }
    }
    if (r) {
        emc_pairs_widen(stage, taps, words, 1);
        emc_pairs_channels(p, words, 0, req, fast, out + (pixels - 1) * p->out_c);
    }
}
#else
typedef int emc_pairs_unused;   /* ISO C wants a translation unit to declare something */
#endif
