"""Integer requantisation as TF Lite Micro and CMSIS-NN do it: a Q31 multiplier and a power-of-two shift.

`quantize_multiplier(real)` gives the (multiplier, shift) pair; `requantize(x, multiplier, shift)` is the
numpy twin of the C runtime's emc_requantize (TFLM's MultiplyByQuantizedMultiplier: a rounding doubling
high multiply followed by a rounding right shift), vectorised over int64 arrays.
"""
import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real):
    """(q31 multiplier, shift) with real ~= multiplier * 2**(shift - 31); shift > 0 is a left shift."""
    real = float(real)
    if real == 0.0 or not math.isfinite(real):
        return 0, 0
    frac, shift = math.frexp(real)
    q = int(math.copysign(math.floor(abs(frac) * (1 << 31) + 0.5), frac))
    if abs(q) == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return (INT32_MAX if q > 0 else -INT32_MAX), 30
    return q, shift


def quantize_multipliers(reals):
    """Vector form of quantize_multiplier: two int32 arrays."""
    pairs = [quantize_multiplier(r) for r in np.asarray(reals, np.float64).reshape(-1)]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


def requantize(x, multiplier, shift):
    """emc_requantize on int64 arrays: round(x * multiplier * 2**(shift - 31)) the TFLM way, as int64.

    The C's roundings in closed form, a few passes over x: the doubling high multiply's nudge and truncating
    division come to (ab + 2^30) >> 31 for either sign of ab, the rounding right shift (half away from zero) to
    (high + 2^(right-1) - [high < 0]) >> right."""
    x = np.asarray(x, np.int64)
    multiplier = np.asarray(multiplier, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    v = np.clip(x << left, INT32_MIN, INT32_MAX)
    high = v * multiplier
    high += 1 << 30
    high >>= 31
    if (multiplier == INT32_MIN).any():                 # the one product the doubling high multiply saturates
        high = np.where((v == INT32_MIN) & (multiplier == INT32_MIN), INT32_MAX, high)
    if right.any():
        high += ((np.int64(1) << right) >> 1) - ((high < 0) & (right > 0))
        high >>= right
    return high


def clamp8(x, lo=-128, hi=127):
    """Saturate to [lo, hi] and return int8."""
    return np.clip(x, lo, hi).astype(np.int8)
