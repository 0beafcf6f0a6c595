/* emc_nn activations: relu/relu6 as requantise + clamp, leaky relu and prelu in integers, table look-ups for
 * the smooth functions, and an integer softmax. All work in place. */
#include "emc_nn.h"

void emc_requant_clamp_s8(const emc_requant_params *p, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->count; ++i)
        out[i] = emc_requant8((int32_t)in[i] - p->in_zp, p->mult, p->shift, p->out_zp, p->act_min, p->act_max);
}

void emc_leaky_relu_s8(const emc_leaky_params *p, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < p->count; ++i) {
        const int32_t v = (int32_t)in[i] - p->in_zp;
        const int32_t r = v >= 0 ? emc_requantize(v, p->mult_pos, p->shift_pos)
                                 : emc_requantize(v, p->mult_neg, p->shift_neg);
        out[i] = emc_clamp8(r + p->out_zp, -128, 127);
    }
}

void emc_prelu_s8(const emc_leaky_params *p, const int8_t *in, int8_t *out)
{
    int32_t i, j = 0;
    for (i = 0; i < p->count; ++i) {
        const int32_t v = (int32_t)in[i] - p->in_zp;
        const int32_t r = v >= 0 ? emc_requantize(v, p->mult_pos, p->shift_pos)
                                 : emc_requantize(v * p->alpha[j], p->mult_neg, p->shift_neg);
        out[i] = emc_clamp8(r + p->out_zp, -128, 127);
        if (++j == p->period) j = 0;
    }
}

void emc_lut_s8(int32_t count, const int8_t *table, const int8_t *in, int8_t *out)
{
    int32_t i;
    for (i = 0; i < count; ++i)
        out[i] = table[(int32_t)in[i] + 128];
}

void emc_softmax_s8(int32_t rows, int32_t depth, int32_t recip, const int32_t *table, const int8_t *in,
                    int8_t *out)
{
    int32_t r, i;
    for (r = 0; r < rows; ++r, in += depth, out += depth) {
        int32_t max = -128, sum = 0;
        for (i = 0; i < depth; ++i)
            if (in[i] > max) max = in[i];
        for (i = 0; i < depth; ++i)
            sum += table[max - in[i]];
        for (i = 0; i < depth; ++i) {
            const int32_t q = (int32_t)(((int64_t)table[max - in[i]] * recip + sum / 2) / sum) - 128;
            out[i] = emc_clamp8(q, -128, 127);
        }
    }
}
