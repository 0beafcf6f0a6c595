/* emc_nn recurrent layers: SimpleRNN, GRU (reset_after) and LSTM with int8 weights and int16 state.
 * h and gate outputs are Q0.15, pre-activations and the LSTM cell Q3.12; sigmoid and tanh come from 513-entry
 * Q0.15 tables over [-8, 8] (steps of 1/32), linearly interpolated. The state starts at zero on every call. */
#include "emc_nn.h"

static int32_t emc_sat16(int32_t v)
{
    return v < -32768 ? -32768 : (v > 32767 ? 32767 : v);
}

/* Table value at a Q3.12 code: entry (q + 32768) / 128, interpolated by the remaining 7 bits. */
static int32_t emc_lookup16(const int16_t *table, int32_t q)
{
    int32_t u = q + 32768, idx = u >> 7, frac = u & 127;
    return table[idx] + ((((int32_t)table[idx + 1] - table[idx]) * frac + 64) >> 7);
}

static int32_t emc_round_shift(int32_t v, int32_t bits)
{
    return (v + (1 << (bits - 1))) >> bits;
}

/* Gate pre-activations of one time step: x part and h part requantised to Q3.12 apart.
 * pre[j] = sat16(px + ph); for a GRU's candidate rows (j >= 2 units) pre[j] = sat16(px), hpart[j - 2u] = sat16(ph). */
static void emc_rnn_gates(const emc_rnn_params *p, const int8_t *x, const int16_t *h, int16_t *pre, int16_t *hpart)
{
    int32_t j, k, rows = p->gates * p->units;
    for (j = 0; j < rows; ++j) {
        int32_t ax = p->bias_x[j], ah = p->bias_h[j], px, ph;
        const int8_t *wx = p->w_x + j * p->features, *wh = p->w_h + j * p->units;
        for (k = 0; k < p->features; ++k)
            ax += ((int32_t)x[k] - p->in_zp) * wx[k];
        for (k = 0; k < p->units; ++k)
            ah += (int32_t)h[k] * wh[k];
        px = emc_requantize(ax, p->mult_x[j], p->shift_x[j]);
        ph = emc_requantize(ah, p->mult_h[j], p->shift_h[j]);
        if (p->cell == 1 && j >= 2 * p->units) {
            pre[j] = (int16_t)emc_sat16(px);
            hpart[j - 2 * p->units] = (int16_t)emc_sat16(ph);
        } else {
            pre[j] = (int16_t)emc_sat16(px + ph);
        }
    }
}

void emc_rnn_s8(const emc_rnn_params *p, const int8_t *in, int8_t *out)
{
    const int32_t u = p->units;
    int16_t *h = p->work, *c = p->work + u, *pre = p->work + 2 * u;
    int16_t *hpart = c;                       /* a GRU keeps no cell: its candidate's h part goes there */
    int32_t t, k;
    for (k = 0; k < 2 * u; ++k) p->work[k] = 0;
    for (t = 0; t < p->steps; ++t) {
        emc_rnn_gates(p, in + t * p->features, h, pre, hpart);
        for (k = 0; k < u; ++k) {
            if (p->cell == 0) {
                h[k] = (int16_t)emc_lookup16(p->tanh, pre[k]);
            } else if (p->cell == 2) {
                int32_t i = emc_lookup16(p->sigmoid, pre[k]), f = emc_lookup16(p->sigmoid, pre[u + k]);
                int32_t g = emc_lookup16(p->tanh, pre[2 * u + k]), o = emc_lookup16(p->sigmoid, pre[3 * u + k]);
                int32_t cell = emc_sat16(emc_round_shift(f * c[k], 15) + emc_round_shift(i * g, 18));
                c[k] = (int16_t)cell;
                h[k] = (int16_t)emc_round_shift(o * emc_lookup16(p->tanh, cell), 15);
            } else {
                int32_t z = emc_lookup16(p->sigmoid, pre[k]), r = emc_lookup16(p->sigmoid, pre[u + k]);
                int32_t cand = emc_sat16(pre[2 * u + k] + emc_round_shift(r * hpart[k], 15));
                h[k] = (int16_t)emc_round_shift(z * h[k] + (32768 - z) * emc_lookup16(p->tanh, cand), 15);
            }
        }
        if (p->return_sequences || t == p->steps - 1) {
            int8_t *dst = out + (p->return_sequences ? t * u : 0);
            for (k = 0; k < u; ++k)
                dst[k] = emc_requant8(h[k], p->out_mult, p->out_shift, p->out_zp, -128, 127);
        }
    }
}
