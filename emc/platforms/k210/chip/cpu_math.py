"""Float32 arithmetic as the K210's CPU layers compute it: single precision, fused multiply-add where GCC fuses.

A fused a*b+c is emulated by computing in float64 (the float32 product is exact there) and rounding once to
float32; this double rounding differs from a true FMA only when the float64 sum lands exactly on a float32 tie.
"""
import numpy as np


def fma32(a, b, c):
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


def roundf(x):
    """C roundf: half away from zero."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def dot_fma(x, w):
    """out[o] = sum over i, in order, of x[i] * w[o][i] with one rounding per step (FMA accumulation)."""
    acc = np.zeros(w.shape[0], np.float32)
    x = np.asarray(x, np.float32)
    for i in range(w.shape[1]):
        acc = fma32(x[i], w[:, i], acc)
    return acc


def sequential_sum(values, axis=-1):
    """Float32 sum accumulated element by element from 0, as a C loop does."""
    values = np.moveaxis(np.asarray(values, np.float32), axis, 0)
    acc = np.zeros(values.shape[1:], np.float32)
    for v in values:
        acc = (acc + v).astype(np.float32)
    return acc


def carry_shift(v, shift):
    """The SDK's kpu_carry_shift, including its off-by-one for negative odd intermediates (spec 2.4)."""
    v = np.asarray(v, np.int64)
    if shift <= 0:
        return v
    t = v >> (shift - 1)
    odd = (t & 1) == 1
    return np.where(odd, np.where(v >= 0, (t >> 1) + 1, (t >> 1) - 1), t >> 1)


def exact_f32(fn, x):
    """A transcendental function of float32 values rounded from float64 (what a correctly rounded libm gives)."""
    with np.errstate(all="ignore"):
        return fn(np.asarray(x, np.float64)).astype(np.float32)
