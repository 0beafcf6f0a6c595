/* emc_nn dense layers (on the last axis) and stand-alone per-channel affine ops (batch norm, rescale). */
#include "emc_nn.h"

void emc_dense_s8(const emc_dense_params *p, const int8_t *in, int8_t *out)
{
    int32_t r;
    emc_epilogue e;
#ifdef EMC_USE_CMSIS_NN
    if (emc_cmsis_dense_s8(p, in, out)) return;
#endif
    e.kbias = p->kbias; e.mult = p->mult; e.shift = p->shift;
    e.out_zp = p->out_zp; e.act_min = p->act_min; e.act_max = p->act_max; e.lut = p->lut;
    for (r = 0; r < p->rows; ++r)
        emc_dot_channels_s8(in + r * p->in_features, p->weights, p->in_features, p->out_features, &e,
                            out + r * p->out_features);
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
