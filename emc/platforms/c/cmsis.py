"""What emc's CMSIS-NN build (-DEMC_USE_CMSIS_NN) needs from the generator: the scratch buffer's size.

cmsis_scratch_bytes() is the maximum over the layers of what CMSIS-NN's own *_get_buffer_size functions return
on a Cortex-M with the DSP extension (M4, M7, M33), for the entry points emc_cmsis.c calls: on cores without it
they ask for no more. The generated <name>_cmsis_scratch_bytes() asks CMSIS-NN itself on the target; the CMSIS-NN
test checks the two agree, and <NAME>_CMSIS_SCRATCH_SIZE can be overridden for other cores (Helium / MVE).
"""
import numpy as np


def _align4(n):
    return (n + 3) // 4 * 4


GEMM_MIN_ROWS = 8   # fewer gathered windows a call and CMSIS-NN's per-call weight sums cost more than the GEMM saves


def one_by_one_fast(step):
    """True for the convolutions arm_convolve_wrapper_s8 already gives to arm_convolve_1x1_s8_fast."""
    p = step.params
    return tuple(p["kernel"]) == (1, 1) and tuple(p["stride"]) == (1, 1) and tuple(p["pad"]) == (0, 0)


def gemm_taps(step):
    """Bytes of one gathered window in the GEMM's rows: kh * kw * in_c rounded up to a multiple of 4, so that
    CMSIS-NN's GEMM never falls into its byte-at-a-time tail (the extra columns meet zero weights)."""
    p = step.params
    return (p["kernel"][0] * p["kernel"][1] * p["in_shape"][2] + 3) // 4 * 4


def gemm_weights(step):
    """The conv weights as the GEMM's [out_c][gemm_taps] matrix: the OHWI rows, zero-padded."""
    w = step.arrays["weights"].reshape(step.arrays["weights"].shape[0], -1)
    return np.pad(w, ((0, 0), (0, gemm_taps(step) - w.shape[1])))


def gemm_rows(step, free_bytes):
    """How many gathered windows of a conv step CMSIS-NN's 1x1 GEMM takes a call when free_bytes of the arena are
    unused during the step (all the output pixels when they fit); 0 when the step keeps arm_convolve_wrapper_s8."""
    if step.kind != "conv2d" or one_by_one_fast(step) or "bias" not in step.arrays:
        return 0
    p = step.params
    rows = min(p["out_shape"][0] * p["out_shape"][1], free_bytes // gemm_taps(step))
    return rows if rows >= GEMM_MIN_ROWS else 0


def step_scratch_bytes(step, gemm=False):
    """CMSIS-NN's scratch for one step on a DSP core (0 for steps CMSIS-NN does not run, and for conv steps run as
    the unbuffered 1x1 GEMM over windows gathered in the arena)."""
    p = step.params
    if gemm:
        return 0
    if step.kind in ("conv2d", "depthwise_conv2d") and tuple(p["dilation"]) != (1, 1):
        return 0                                                  # the portable kernel runs dilated convolutions
    if step.kind == "conv2d":
        kh, kw = p["kernel"]
        if (kh, kw) == (1, 1) and tuple(p["pad"]) == (0, 0):
            return 0                                              # arm_convolve_1x1_s8(_fast): no columns (GCC)
        return 2 * _align4(kh * kw * p["in_shape"][2]) * 2       # arm_convolve_s8 / 1_x_n: two q15 columns
    if step.kind == "depthwise_conv2d":
        kh, kw = p["kernel"]
        if p["depth_mult"] != 1:
            return 0                                              # arm_depthwise_conv_s8
        if (kh, kw) == (3, 3) and p["pad"][0] <= 1 and p["pad"][1] <= 1:
            return 0                                              # arm_depthwise_conv_3x3_s8
        return p["in_shape"][2] * kh * kw * 2                     # arm_depthwise_conv_s8_opt: q15 window
    if step.kind == "avg_pool":
        return 4 * p["in_shape"][2]                               # arm_avgpool_s8: int32 sums per channel
    return 0                                                      # fully connected, max pool: none on DSP


def cmsis_scratch_bytes(steps, gemm=None):
    """The maximum of step_scratch_bytes; gemm: {step index: (arena offset, rows)} of steps run as the 1x1 GEMM."""
    gemm = gemm or {}
    return max((step_scratch_bytes(s, i in gemm) for i, s in enumerate(steps)), default=0)


BUFFER_CALLS = {
    "conv2d": "emc_cmsis_conv_buffer_size(&{p}, 0)",
    "depthwise_conv2d": "emc_cmsis_conv_buffer_size(&{p}, 1)",
    "dense": "emc_cmsis_dense_buffer_size(&{p})",
    "avg_pool": "emc_cmsis_pool_buffer_size(&{p}, 1)",
    "max_pool": "emc_cmsis_pool_buffer_size(&{p}, 0)",
}


def scratch_function(name, steps):
    """C lines of int32_t <name>_cmsis_scratch_bytes(void): CMSIS-NN's own answer, maximum over the layers."""
    lines = ["#ifdef EMC_USE_CMSIS_NN",
             f"int32_t {name}_cmsis_scratch_bytes(void)", "{", "    int32_t need = 0, b;"]
    for i, step in enumerate(steps):
        if step.kind in BUFFER_CALLS:
            lines.append(f"    b = {BUFFER_CALLS[step.kind].format(p=f'L{i}_p')}; if (b > need) need = b;")
    return lines + ["    return need;", "}", "#endif", ""]
