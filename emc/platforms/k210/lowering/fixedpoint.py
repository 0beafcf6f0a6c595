"""Fixed-point multiplier/shift pairs for the KPU's and the SDK's integer arithmetic."""
import math


def fixed_mul(value, bits, max_shift, min_shift=0):
    """(mul, shift) with mul / 2**shift ~= value, |mul| <= 2**bits - 1 and min_shift <= shift <= max_shift.

    The largest allowed shift is taken, so the multiplier keeps as many significant bits as the field allows.
    """
    value = float(value)
    limit = (1 << bits) - 1
    if value == 0.0 or not math.isfinite(value):
        return 0, min_shift
    shift = int(math.floor(math.log2(limit / abs(value))))
    shift = max(min_shift, min(max_shift, shift))
    mul = int(round(value * 2.0 ** shift))
    while abs(mul) > limit and shift > min_shift:
        shift -= 1
        mul = int(round(value * 2.0 ** shift))
    return max(-limit, min(limit, mul)), shift

