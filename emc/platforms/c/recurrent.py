"""SimpleRNN, GRU and LSTM for the C platform: lowering, the Python twin of the kernel, and the C call.

Integer scheme (the TF Lite Micro / CMSIS-NN one: int8 weights, 16-bit state, with emc's choices below):
- input x: the graph's int8 tensor; weights: symmetric int8 per gate row (x part and h part apart);
- hidden state h: int16 Q0.15 (h stays in [-1, 1] with tanh); LSTM cell state c: int16 Q3.12 (saturates at
  +-8, TF Lite Micro's usual cell scale), both starting at zero;
- gate pre-activations: the x and h int32 accumulators requantised separately to int16 Q3.12 and added;
- sigmoid / tanh: a 513-entry int16 Q0.15 table over [-8, 8] in steps of 1/32, linearly interpolated;
- products of Q0.15 values are rounded right shifts (c = f c' >> 15 + i g >> 18; h = o tanh(c) >> 15;
  GRU: hh = tanh(x_h + r (h U_h + b) >> 15), h = (z h' + (1 - z) hh) >> 15);
- the output: h requantised from Q0.15 to the calibrated int8 output tensor (every step or the last one).
The state and gate buffers are a static int16 work array per layer, outside the arena (reported in the notes).
"""
import numpy as np

from .codegen import C_TYPES, emits
from .fixedpoint import clamp8, quantize_multiplier, requantize
from .kernels import kernel
from .quantize import per_channel_weights, quantize_bias, requant_arrays
from .table import TABLE

CELLS = {"simple_rnn": 0, "gru": 1, "lstm": 2}
GATES = {"simple_rnn": 1, "gru": 3, "lstm": 4}
STATE_FRAC = 15                  # h, gate outputs: Q0.15
PRE_FRAC = 12                    # pre-activations and the LSTM cell: Q3.12
TABLE_STEP_BITS = 7              # 2**7 Q3.12 codes per table step = 1/32
C_TYPES.setdefault(np.dtype(np.int16), "int16_t")


def activation_table16(fn):
    """513 int16 entries: round(fn(-8 + i / 32) * 2**15), saturated, for the interpolating lookup."""
    x = -8.0 + np.arange(513, dtype=np.float64) / 32.0
    return np.clip(np.round(fn(x) * (1 << STATE_FRAC)), -32768, 32767).astype(np.int16)


SIGMOID_TABLE = activation_table16(lambda x: 1.0 / (1.0 + np.exp(-x)))
TANH_TABLE = activation_table16(np.tanh)


def work_elements(step):
    """int16 elements of a layer's work array: its gates plus two units of state."""
    return (step.params["gates"] + 2) * step.params["units"]


def static_bytes(steps):
    """Bytes of the static int16 work arrays of a program's recurrent layers (RAM outside the arena)."""
    return sum(2 * work_elements(s) for s in steps if s.kind in CELLS)


# ---- lowering ------------------------------------------------------------------------------------------------------
def recurrent(ctx, node):
    op, x = node.op, ctx.tensor(node.inputs[0])
    steps, features = x.shape
    units, gates = op.units, GATES[op.kind]
    wx_q, wx_scale = per_channel_weights(op.weights["kernel"], axis=1)
    wh_q, wh_scale = per_channel_weights(op.weights["recurrent_kernel"], axis=1)
    bias = op.weights["bias"]
    acc_x, acc_h = x.scale * wx_scale, wh_scale / (1 << STATE_FRAC)
    b_in = None if bias is None else (bias[0] if bias.ndim == 2 else bias)
    b_rec = bias[1] if bias is not None and bias.ndim == 2 else None
    mult_x, shift_x = requant_arrays(acc_x * (1 << PRE_FRAC))
    mult_h, shift_h = requant_arrays(acc_h * (1 << PRE_FRAC))
    out = ctx.calibrated(node)
    out_mult, out_shift = quantize_multiplier(1.0 / ((1 << STATE_FRAC) * out.scale))
    params = {"steps": steps, "features": features, "units": units, "gates": gates, "cell": CELLS[op.kind],
              "return_sequences": int(op.return_sequences), "in_zp": x.zero_point, "out_zp": out.zero_point,
              "out_mult": out_mult, "out_shift": out_shift}
    arrays = {"w_x": np.ascontiguousarray(wx_q.T), "w_h": np.ascontiguousarray(wh_q.T),
              "bias_x": quantize_bias(b_in, acc_x, gates * units), "bias_h": quantize_bias(b_rec, acc_h, gates * units),
              "mult_x": mult_x, "shift_x": shift_x, "mult_h": mult_h, "shift_h": shift_h,
              "sigmoid": SIGMOID_TABLE, "tanh": TANH_TABLE}
    step = ctx.emit(op.kind, node, [x], out, params, arrays, macs=steps * (features + units) * gates * units)
    ctx.notes.append(f"layer '{node.name}' ({op.kind}): {2 * work_elements(step)} bytes of static int16 state and "
                     f"gate buffers outside the arena")


for _kind in CELLS:
    TABLE[_kind] = recurrent


# ---- the Python twin -----------------------------------------------------------------------------------------------
def _sat16(v):
    return np.clip(v, -32768, 32767)


def _lookup(table, q):
    """The interpolating table lookup of the C kernel, for int64 Q3.12 codes in the int16 range."""
    u = q + 32768
    idx, frac = u >> TABLE_STEP_BITS, u & ((1 << TABLE_STEP_BITS) - 1)
    t = table.astype(np.int64)
    return t[idx] + (((t[idx + 1] - t[idx]) * frac + (1 << (TABLE_STEP_BITS - 1))) >> TABLE_STEP_BITS)


def _rshift_round(v, bits):
    return (v + (1 << (bits - 1))) >> bits


@kernel(*CELLS)
def run_recurrent(step, xs, out_shape):
    p, a = step.params, step.arrays
    x = xs[0].astype(np.int64) - p["in_zp"]
    n, units, cell = len(x), p["units"], p["cell"]
    w_x, w_h = a["w_x"].astype(np.int64), a["w_h"].astype(np.int64)
    sig, tanh = a["sigmoid"], a["tanh"]
    h = np.zeros((n, units), np.int64)
    c = np.zeros((n, units), np.int64)
    outs = []
    for t in range(p["steps"]):
        px = requantize(x[:, t] @ w_x.T + a["bias_x"], a["mult_x"], a["shift_x"])
        ph = requantize(h @ w_h.T + a["bias_h"], a["mult_h"], a["shift_h"])
        if cell == 0:
            h = _lookup(tanh, _sat16(px + ph))
        elif cell == 2:
            pre = _sat16(px + ph)
            i, f, g, o = (pre[:, k * units:(k + 1) * units] for k in range(4))
            i, f, g, o = _lookup(sig, i), _lookup(sig, f), _lookup(tanh, g), _lookup(sig, o)
            c = _sat16(_rshift_round(f * c, STATE_FRAC) + _rshift_round(i * g, 2 * STATE_FRAC - PRE_FRAC))
            h = _rshift_round(o * _lookup(tanh, c), STATE_FRAC)
        else:
            zr = _lookup(sig, _sat16(px[:, :2 * units] + ph[:, :2 * units]))
            z, r = zr[:, :units], zr[:, units:]
            pre = _sat16(_sat16(px[:, 2 * units:]) + _rshift_round(r * _sat16(ph[:, 2 * units:]), STATE_FRAC))
            h = _rshift_round(z * h + ((1 << STATE_FRAC) - z) * _lookup(tanh, pre), STATE_FRAC)
        if p["return_sequences"] or t == p["steps"] - 1:
            outs.append(clamp8(requantize(h, p["out_mult"], p["out_shift"]) + p["out_zp"]))
    return np.stack(outs, axis=1).reshape((n,) + tuple(out_shape))


# ---- the C call ------------------------------------------------------------------------------------------------------
@emits(*CELLS)
def emit_recurrent(gen, i, step):
    p = step.params
    fields = {k: p[k] for k in ("steps", "features", "units", "gates", "cell", "return_sequences", "in_zp",
                                "out_zp", "out_mult", "out_shift")}
    fields.update(gen.arrays(i, step, ("w_x", "w_h", "bias_x", "bias_h", "mult_x", "shift_x", "mult_h", "shift_h",
                                       "sigmoid", "tanh")))
    work = f"L{i}_work"
    gen.data.append(f"static int16_t {work}[{work_elements(step)}];   /* h, c and gates: static RAM */")
    fields["work"] = work
    ident = gen.struct(i, "emc_rnn_params", fields)
    return [f"emc_rnn_s8(&{ident}, {gen.ptr(step.inputs[0])}, {gen.ptr(step.output)});"]
