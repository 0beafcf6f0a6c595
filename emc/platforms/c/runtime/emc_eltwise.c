/* emc_nn element-wise ops with broadcasting (add / sub / average, multiply, maximum / minimum) and concat. */
#include "emc_nn.h"

#ifdef EMC_USE_CMSIS_NN
#include "arm_nnfunctions.h"
#endif

/* Element index of input k at output position (i0, i1, i2, i3). */
static int32_t emc_index(const int32_t *strides, int32_t k, int32_t i0, int32_t i1, int32_t i2, int32_t i3)
{
    const int32_t *s = strides + 4 * k;
    return i0 * s[0] + i1 * s[1] + i2 * s[2] + i3 * s[3];
}

void emc_add_s8(const emc_add_params *p, const int8_t *const *in, int8_t *out)
{
    int32_t i0, i1, i2, i3, k, o = 0;
    const int32_t *d = p->dims;
#ifdef EMC_USE_CMSIS_NN
    if (p->n == 2 && p->sign[1] == 1 && p->strides[3] == 1 && p->strides[7] == 1) {
        int32_t size = d[0] * d[1] * d[2] * d[3], same = 1;
        for (k = 0; k < 8; ++k)
            if (p->strides[k] != p->strides[k % 4]) same = 0;
        if (same && p->strides[0] == d[1] * d[2] * d[3] && p->strides[1] == d[2] * d[3] && p->strides[2] == d[3]
            && arm_elementwise_add_s8(in[0], in[1], -p->in_zp[0], p->in_mult[0], p->in_shift[0], -p->in_zp[1],
                                      p->in_mult[1], p->in_shift[1], p->left_shift, out, p->out_zp, p->out_mult,
                                      p->out_shift, -128, 127, size) == ARM_CMSIS_NN_SUCCESS)
            return;
    }
#endif
    for (i0 = 0; i0 < d[0]; ++i0)
        for (i1 = 0; i1 < d[1]; ++i1)
            for (i2 = 0; i2 < d[2]; ++i2)
                for (i3 = 0; i3 < d[3]; ++i3) {
                    int32_t total = 0;
                    for (k = 0; k < p->n; ++k) {
                        int32_t v = (int32_t)in[k][emc_index(p->strides, k, i0, i1, i2, i3)] - p->in_zp[k];
                        total += p->sign[k] * emc_requantize(v * (1 << p->left_shift), p->in_mult[k], p->in_shift[k]);
                    }
                    out[o++] = emc_requant8(total, p->out_mult, p->out_shift, p->out_zp, -128, 127);
                }
}

void emc_mul_s8(const emc_mul_params *p, const int8_t *const *in, int8_t *out)
{
    int32_t i0, i1, i2, i3, o = 0;
    const int32_t *d = p->dims;
    for (i0 = 0; i0 < d[0]; ++i0)
        for (i1 = 0; i1 < d[1]; ++i1)
            for (i2 = 0; i2 < d[2]; ++i2)
                for (i3 = 0; i3 < d[3]; ++i3) {
                    int32_t a = (int32_t)in[0][emc_index(p->strides, 0, i0, i1, i2, i3)] - p->in_zp[0];
                    int32_t b = (int32_t)in[1][emc_index(p->strides, 1, i0, i1, i2, i3)] - p->in_zp[1];
                    out[o++] = emc_requant8(a * b, p->out_mult, p->out_shift, p->out_zp, -128, 127);
                }
}

void emc_maxmin_s8(const emc_maxmin_params *p, const int8_t *const *in, int8_t *out)
{
    int32_t i0, i1, i2, i3, k, o = 0;
    const int32_t *d = p->dims;
    for (i0 = 0; i0 < d[0]; ++i0)
        for (i1 = 0; i1 < d[1]; ++i1)
            for (i2 = 0; i2 < d[2]; ++i2)
                for (i3 = 0; i3 < d[3]; ++i3) {
                    int32_t best = 0;
                    for (k = 0; k < p->n; ++k) {
                        int32_t v = (int32_t)in[k][emc_index(p->strides, k, i0, i1, i2, i3)] - p->in_zp[k];
                        v = emc_requantize(v, p->in_mult[k], p->in_shift[k]) + p->out_zp;
                        if (k == 0 || (p->is_max ? v > best : v < best)) best = v;
                    }
                    out[o++] = emc_clamp8(best, -128, 127);
                }
}

void emc_concat_s8(const emc_concat_params *p, const int8_t *const *in, int8_t *out)
{
    int32_t o, k, i;
    for (o = 0; o < p->outer; ++o)
        for (k = 0; k < p->n; ++k) {
            const int32_t count = p->inner[k];
            const int8_t *src = in[k] + o * count;
            if (p->same[k]) {
                memcpy(out, src, (size_t)count);
            } else {
                for (i = 0; i < count; ++i)
                    out[i] = emc_requant8((int32_t)src[i] - p->in_zp[k], p->in_mult[k], p->in_shift[k], p->out_zp,
                                          -128, 127);
            }
            out += count;
        }
}
