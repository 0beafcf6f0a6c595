/* emc_nn data movement: constant padding, cropping and nearest-neighbour upsampling of NHWC maps. */
#include "emc_nn.h"

void emc_pad_s8(const emc_window_params *p, const int8_t *in, int8_t *out)
{
    int32_t y;
    const int32_t row = p->in_w * p->channels;
    memset(out, p->value, (size_t)(p->out_h * p->out_w * p->channels));
    for (y = 0; y < p->in_h; ++y)
        memcpy(out + ((y + p->top) * p->out_w + p->left) * p->channels, in + y * row, (size_t)row);
}

void emc_crop_s8(const emc_window_params *p, const int8_t *in, int8_t *out)
{
    int32_t y;
    const int32_t row = p->out_w * p->channels;
    for (y = 0; y < p->out_h; ++y)
        memcpy(out + y * row, in + ((y + p->top) * p->in_w + p->left) * p->channels, (size_t)row);
}

void emc_upsample_s8(const emc_upsample_params *p, const int8_t *in, int8_t *out)
{
    int32_t y, x, fy, fx;
    const int32_t c = p->channels;
    for (y = 0; y < p->in_h; ++y)
        for (fy = 0; fy < p->factor_h; ++fy)
            for (x = 0; x < p->in_w; ++x)
                for (fx = 0; fx < p->factor_w; ++fx) {
                    memcpy(out, in + (y * p->in_w + x) * c, (size_t)c);
                    out += c;
                }
}
