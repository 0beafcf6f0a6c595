"""What emc's CMSIS-NN build (-DEMC_USE_CMSIS_NN) needs from the generator: the scratch buffer's size.

cmsis_scratch_bytes() is the maximum over the layers of what CMSIS-NN's own *_get_buffer_size functions return
on a Cortex-M with the DSP extension (M4, M7, M33), for the entry points emc_cmsis.c calls: on cores without it
they ask for no more. The generated <name>_cmsis_scratch_bytes() asks CMSIS-NN itself on the target; the CMSIS-NN
test checks the two agree, and <NAME>_CMSIS_SCRATCH_SIZE can be overridden for other cores (Helium / MVE).
"""
import numpy as np


def _align4(n):
    return (n + 3) // 4 * 4


def gemm_taps(step):
    """Bytes of one gathered window for emc_conv2d_pairs_s8: kh * kw * in_c rounded up to a multiple of 4 (the
    extra taps meet zero weights), so that every group of four taps widens with two SXTB16s."""
    p = step.params
    return (p["kernel"][0] * p["kernel"][1] * p["in_shape"][2] + 3) // 4 * 4


def pair_weights(step):
    """The conv weights as emc_conv2d_pairs_s8 reads them: int32 words of two int16 taps (the first in the low half)
    from the OHWI rows zero-padded to gemm_taps, each group of four taps in the order (0, 2, 1, 3) of SXTB16's two
    words; blocks of four channels with their words interleaved, [out_c // 4][taps // 2][4], then the remaining
    channels one by one, [out_c % 4][taps // 2]."""
    w = step.arrays["weights"].reshape(step.arrays["weights"].shape[0], -1).astype(np.int16)
    w = np.pad(w, ((0, 0), (0, gemm_taps(step) - w.shape[1])))
    out_c, taps = w.shape
    w = w.reshape(out_c, taps // 4, 4)[:, :, [0, 2, 1, 3]].reshape(out_c, taps // 2, 2)
    blocks = out_c // 4 * 4
    head = w[:blocks].reshape(blocks // 4, 4, taps // 2, 2).transpose(0, 2, 1, 3)
    pairs = np.concatenate([head.reshape(-1, 2), w[blocks:].reshape(-1, 2)]).astype(np.int64)
    return ((pairs[:, 0] & 0xFFFF) | ((pairs[:, 1] & 0xFFFF) << 16)).astype(np.uint32).view(np.int32)


def pairs_place(step, free_offset, free_bytes):
    """Where a conv step's emc_conv2d_pairs_s8 buffer lives in CMSIS-NN builds (every conv2d with a bias, 1x1 ones
    too: it beats arm_convolve_1x1_s8_fast): its arena offset when the arena bytes free during the step hold it,
    else "scratch" (the CMSIS-NN scratch buffer, grown to it); None for other steps."""
    if step.kind != "conv2d" or "bias" not in step.arrays:
        return None
    return free_offset if free_bytes >= pairs_buffer_bytes(step) else "scratch"


def widened_weight_bytes(steps):
    """Flash a CMSIS-NN build adds over the portable one: every pairs conv keeps its weights as int16 words
    (out_c * gemm_taps * 2 bytes) instead of int8."""
    return sum(step.params["out_shape"][2] * gemm_taps(step) * 2 - step.arrays["weights"].size
               for step in steps if pairs_place(step, 0, 0) is not None)


def pairs_buffer_bytes(step):
    """emc_conv2d_pairs_s8's buffer: two widened windows (4 * gemm_taps), one gathered window (gemm_taps) and
    three requantisation words per output channel."""
    return 5 * gemm_taps(step) + 12 * step.params["out_shape"][2]


def step_scratch_bytes(step, place=None):
    """The scratch one step needs on a DSP core: CMSIS-NN's (0 for steps CMSIS-NN does not run), or for a conv run
    as emc_conv2d_pairs_s8 (place from pairs_place) its buffer when that is in the scratch, else 0."""
    p = step.params
    if place is not None:
        return pairs_buffer_bytes(step) if place == "scratch" else 0
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
    """The maximum of step_scratch_bytes; gemm: {step index: pairs_place} of the steps run as emc_conv2d_pairs_s8."""
    gemm = gemm or {}
    return max((step_scratch_bytes(s, gemm.get(i)) for i, s in enumerate(steps)), default=0)


BUFFER_CALLS = {
    "conv2d": "emc_cmsis_conv_buffer_size(&{p}, 0)",
    "depthwise_conv2d": "emc_cmsis_conv_buffer_size(&{p}, 1)",
    "dense": "emc_cmsis_dense_buffer_size(&{p})",
    "avg_pool": "emc_cmsis_pool_buffer_size(&{p}, 1)",
    "max_pool": "emc_cmsis_pool_buffer_size(&{p}, 0)",
}


def scratch_function(name, steps, gemm=None):
    """C lines of int32_t <name>_cmsis_scratch_bytes(void): CMSIS-NN's own answer, maximum over the layers, and the
    buffers of emc_conv2d_pairs_s8 in the scratch (gemm as for cmsis_scratch_bytes)."""
    gemm = gemm or {}
    lines = ["#ifdef EMC_USE_CMSIS_NN",
             f"int32_t {name}_cmsis_scratch_bytes(void)", "{", "    int32_t need = 0, b;"]
    for i, step in enumerate(steps):
        if gemm.get(i) == "scratch":
            lines.append(f"    b = {pairs_buffer_bytes(step)}; if (b > need) need = b;   /* emc_conv2d_pairs_s8 */")
        elif step.kind in BUFFER_CALLS:
            lines.append(f"    b = {BUFFER_CALLS[step.kind].format(p=f'L{i}_p')}; if (b > need) need = b;")
    return lines + ["    return need;", "}", "#endif", ""]
