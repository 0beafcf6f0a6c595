/* emc_nn pooling: windowed max / average (in-map samples only, TF Lite rounding) and global pooling. */
#include "emc_nn.h"

#if (defined(EMC_USE_ARM_DSP) || defined(EMC_USE_CMSIS_NN)) && defined(__ARM_FEATURE_DSP)
#include <arm_acle.h>
#define EMC_POOL_SIMD 1
#endif

#ifdef EMC_USE_CMSIS_NN
#include "arm_nnfunctions.h"

static int emc_cmsis_avg_pool(const emc_pool_params *p, const int8_t *in, int8_t *out)
{
    cmsis_nn_context ctx;
    cmsis_nn_pool_params pp;
    cmsis_nn_dims in_dims, filter_dims, out_dims;
    memset(&pp, 0, sizeof pp);
    ctx.buf = emc_cmsis_buf;
    ctx.size = emc_cmsis_buf_size;
    pp.stride.h = p->stride_h; pp.stride.w = p->stride_w;
    pp.padding.h = p->pad_top; pp.padding.w = p->pad_left;
    pp.activation.min = -128; pp.activation.max = 127;
    in_dims.n = 1; in_dims.h = p->in_h; in_dims.w = p->in_w; in_dims.c = p->channels;
    filter_dims.n = 1; filter_dims.h = p->pool_h; filter_dims.w = p->pool_w; filter_dims.c = 1;
    out_dims.n = 1; out_dims.h = p->out_h; out_dims.w = p->out_w; out_dims.c = p->channels;
    return arm_avgpool_s8(&ctx, &pp, &in_dims, in, &filter_dims, &out_dims, out) == ARM_CMSIS_NN_SUCCESS;
}
#endif

/* First and one-past-last input index of a pooling window, clipped to the map. */
static void emc_window(int32_t o, int32_t stride, int32_t pad, int32_t size, int32_t extent,
                       int32_t *lo, int32_t *hi)
{
    int32_t start = o * stride - pad;
    int32_t end = start + size;
    *lo = start < 0 ? 0 : start;
    *hi = end > extent ? extent : end;
}

/* dst[k] = the largest in[(y * row + x) * c + k] over y < h, x < w, for k < c (h, w >= 1). On a core with the DSP
 * extension (in the ARM DSP and CMSIS-NN builds) four channels at a time in a register: SSUB8 sets a lane's GE
 * flag where v >= m as signed bytes and SEL takes those lanes from v (CMSIS-NN's arm_max_pool_s8 compares byte by
 * byte, in memory). */
static void emc_max_window(const int8_t *in, int32_t row, int32_t c, int32_t h, int32_t w, int8_t *dst)
{
    int32_t k = 0, y, x;
#ifdef EMC_POOL_SIMD
    for (; k + 4 <= c; k += 4) {
        const int8_t *line = in + k;
        int32_t m, u, v;
        memcpy(&m, line, 4);
        for (y = 0; y < h; ++y, line += row * c) {
            if (w == 3) {                       /* the common 3-wide window, unrolled */
                memcpy(&u, line, 4);
                memcpy(&v, line + c, 4);
                (void)__ssub8(u, v);
                u = (int32_t)__sel((uint32_t)u, (uint32_t)v);
                memcpy(&v, line + 2 * c, 4);
                (void)__ssub8(u, v);
                u = (int32_t)__sel((uint32_t)u, (uint32_t)v);
                (void)__ssub8(u, m);
                m = (int32_t)__sel((uint32_t)u, (uint32_t)m);
                continue;
            }
            for (x = 0; x + 2 <= w; x += 2) {   /* two samples a turn */
                memcpy(&u, line + x * c, 4);
                memcpy(&v, line + (x + 1) * c, 4);
                (void)__ssub8(u, v);
                u = (int32_t)__sel((uint32_t)u, (uint32_t)v);
                (void)__ssub8(u, m);
                m = (int32_t)__sel((uint32_t)u, (uint32_t)m);
            }
            if (x < w) {
                memcpy(&u, line + x * c, 4);
                (void)__ssub8(u, m);
                m = (int32_t)__sel((uint32_t)u, (uint32_t)m);
            }
        }
        memcpy(dst + k, &m, 4);
    }
#endif
    for (; k < c; ++k) {
        int8_t best = in[k];
        for (y = 0; y < h; ++y)
            for (x = 0; x < w; ++x)
                if (in[(y * row + x) * c + k] > best) best = in[(y * row + x) * c + k];
        dst[k] = best;
    }
}

/* Max over the in-map samples of each window (-128 for a window wholly in the padding). */
void emc_max_pool_s8(const emc_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t c = p->channels;
    int32_t oy, ox, y0, y1, x0, x1;
    for (oy = 0; oy < p->out_h; ++oy) {
        emc_window(oy, p->stride_h, p->pad_top, p->pool_h, p->in_h, &y0, &y1);
        for (ox = 0; ox < p->out_w; ++ox) {
            int8_t *dst = out + (oy * p->out_w + ox) * c;
            emc_window(ox, p->stride_w, p->pad_left, p->pool_w, p->in_w, &x0, &x1);
            if (y0 < y1 && x0 < x1)
                emc_max_window(in + (y0 * p->in_w + x0) * c, p->in_w, c, y1 - y0, x1 - x0, dst);
            else
                memset(dst, -128, (size_t)c);
        }
    }
}

void emc_avg_pool_s8(const emc_pool_params *p, const int8_t *in, int8_t *out)
{
    int32_t oy, ox, c, y, x, y0, y1, x0, x1;
#ifdef EMC_USE_CMSIS_NN
    if (emc_cmsis_avg_pool(p, in, out)) return;
#endif
    for (oy = 0; oy < p->out_h; ++oy) {
        emc_window(oy, p->stride_h, p->pad_top, p->pool_h, p->in_h, &y0, &y1);
        for (ox = 0; ox < p->out_w; ++ox) {
            int8_t *dst = out + (oy * p->out_w + ox) * p->channels;
            emc_window(ox, p->stride_w, p->pad_left, p->pool_w, p->in_w, &x0, &x1);
            for (c = 0; c < p->channels; ++c) {
                int32_t sum = 0, n = (y1 - y0) * (x1 - x0), avg;
                for (y = y0; y < y1; ++y)
                    for (x = x0; x < x1; ++x)
                        sum += in[(y * p->in_w + x) * p->channels + c];
                avg = sum > 0 ? (sum + n / 2) / n : (sum - n / 2) / n;
                dst[c] = emc_clamp8(avg, -128, 127);
            }
        }
    }
}

void emc_global_max_pool_s8(const emc_global_pool_params *p, const int8_t *in, int8_t *out)
{
    emc_max_window(in, p->in_w, p->channels, p->in_h, p->in_w, out);
}

void emc_global_avg_pool_s8(const emc_global_pool_params *p, const int8_t *in, int8_t *out)
{
    int32_t c, i;
    const int32_t count = p->in_h * p->in_w;
    for (c = 0; c < p->channels; ++c) {
        int32_t acc = 0;
        for (i = 0; i < count; ++i)
            acc += (int32_t)in[i * p->channels + c] - p->in_zp;
        out[c] = emc_requant8(acc, p->mult, p->shift, p->out_zp, -128, 127);
    }
}
