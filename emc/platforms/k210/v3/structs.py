"""kmodel v3 structures, field for field as the SDK's kpu.h declares them (dissect.cstruct definitions), and the
table of layer type codes (`kpu_model_layer_type_t`) with the body structure of each.

Deviation kept for the writer's sake: kpu.h wraps the scale and bias of QUANTIZE / DEQUANTIZE in a
`kpu_model_quant_param_t quant_param`; here they are the two flat fields `scale`, `bias` (same bytes).
Flexible trailing arrays of kpu.h (`inputs_mem[0]`, `weights[0]`, `quant_params[0]`) are read separately.
"""
from dissect.cstruct import cstruct

from ..chip.layer_types import LAYER_TYPES

V3_DEFINITIONS = """
struct kpu_kmodel_header_t {
    uint32 version;            /* 3 */
    uint32 flags;              /* bit 0: 8-bit weights (KPU eight_bit_mode) */
    uint32 arch;               /* 0 = K210 */
    uint32 layers_length;
    uint32 max_start_address;
    uint32 main_mem_usage;
    uint32 output_count;
};

struct kpu_model_output_t { uint32 address; uint32 size; };
struct kpu_model_layer_header_t { uint32 type; uint32 body_size; };
struct kpu_model_shape_t { uint32 width; uint32 height; uint32 channels; };
struct kpu_model_memory_range_t { uint32 start; uint32 size; };
struct kpu_model_quant_param_t { float scale; float bias; };

/* K210_CONV 10240: the four offsets are absolute file offsets of the KPU blocks */
struct kpu_model_conv_layer_argument_t {
    uint32 flags; uint32 main_mem_out_address;
    uint32 layer_offset; uint32 weights_offset; uint32 bn_offset; uint32 act_offset;
};
/* K210_ADD_PADDING 10241 */
struct kpu_model_add_padding_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 kpu_mem_out_address; uint32 channels;
};
/* K210_REMOVE_PADDING 10242 */
struct kpu_model_remove_padding_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 channels;
};
/* K210_UPLOAD 10243 */
struct kpu_model_upload_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 kpu_mem_out_address;
    uint32 width; uint32 height; uint32 channels;
};
/* ADD 1 */
struct kpu_model_add_layer_argument_t {
    uint32 flags; uint32 main_mem_in_a_address; uint32 main_mem_in_b_address;
    uint32 main_mem_out_address; uint32 count;
};
/* QUANTIZED_ADD 2 */
struct kpu_model_quant_add_layer_argument_t {
    uint32 flags; uint32 main_mem_in_a_address; uint32 main_mem_in_b_address;
    uint32 main_mem_out_address; uint32 count;
    int32 in_a_offset; int32 in_a_mul; int32 in_a_shift;
    int32 in_b_offset; int32 in_b_mul; int32 in_b_shift;
    int32 out_offset; int32 out_mul; int32 out_shift;
};
/* GLOBAL_AVERAGE_POOL2D 5; QUANTIZED_GLOBAL_AVERAGE_POOL2D 6 (Maix-EMC fork) */
struct kpu_model_gap2d_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    uint32 kernel_size; uint32 channels;
};
/* QUANTIZED_MAX_POOL2D 8 */
struct kpu_model_quant_max_pool2d_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    kpu_model_shape_t in_shape; kpu_model_shape_t out_shape;
    uint32 kernel_width; uint32 kernel_height; uint32 stride_width; uint32 stride_height;
    uint32 padding_width; uint32 padding_height;
};
/* AVERAGE_POOL2D 9; MAX_POOL2D 7 (nncase v0.1 writes this body, no loader runs it); act: kpu_model_activation_t */
struct kpu_model_ave_pool2d_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    kpu_model_shape_t in_shape; kpu_model_shape_t out_shape;
    uint32 kernel_width; uint32 kernel_height; uint32 stride_width; uint32 stride_height;
    uint32 padding_width; uint32 padding_height; uint32 act;
};
/* QUANTIZE 11: mem_out_address is a main-memory offset despite the name */
struct kpu_model_quantize_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 mem_out_address; uint32 count;
    float scale; float bias;
};
/* DEQUANTIZE 12 */
struct kpu_model_dequantize_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 count;
    float scale; float bias;
};
/* REQUANTIZE 13 */
struct kpu_model_requantize_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 count;
    uint8 table[256];
};
/* L2_NORMALIZATION 14 */
struct kpu_model_l2_norm_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 channels;
};
/* SOFTMAX 15 */
struct kpu_model_softmax_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 channels;
};
/* CONCAT 16, QUANTIZED_CONCAT 17; kpu_model_memory_range_t inputs_mem[input_count] follow */
struct kpu_model_concat_layer_argument_t {
    uint32 flags; uint32 main_mem_out_address; uint32 input_count;
};
/* FULLY_CONNECTED 18; float weights[out_channels][in_channels], float bias[out_channels] follow;
   act: kpu_model_activation_t */
struct kpu_model_fully_connected_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    uint32 in_channels; uint32 out_channels; uint32 act;
};
/* TENSORFLOW_FLATTEN 20; QUANTIZED_TENSORFLOW_FLATTEN 21 (Maix-EMC fork) */
struct kpu_model_tf_flatten_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; kpu_model_shape_t shape;
};
/* RESIZE_NEAREST_NEIGHBOR 22 */
struct kpu_model_resize_nearest_neighbor_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    kpu_model_shape_t in_shape; uint32 out_width; uint32 out_height; uint32 align_corners;
};
/* QUANTIZED_RESIZE_NEAREST_NEIGHBOR 23 */
struct kpu_model_quant_resize_nearest_neighbor_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    kpu_model_shape_t in_shape; uint32 out_width; uint32 out_height; uint32 align_corners;
};
/* CHANNELWISE_DEQUANTIZE 24; kpu_model_quant_param_t quant_params[channels] follow */
struct kpu_model_channelwise_dequant_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    uint32 channels; uint32 channel_size;
};
/* LOGISTIC 25 */
struct kpu_model_logistic_layer_argument_t {
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 channels;
};
"""

v3 = cstruct()
v3.load(V3_DEFINITIONS)

KPU_TYPES = {10240}
FLOAT_ACTIVATIONS = {0: "linear", 1: "relu", 2: "relu6"}        # kpu_model_activation_t

# Which layer types each loader runs (spec 2.3, 2.5): the stock SDK at HEAD, and Maix-EMC's fork of the
# a33de35 loader (+ QUANTIZED_GLOBAL_AVERAGE_POOL2D 6, QUANTIZED_TENSORFLOW_FLATTEN 21, without 22-25).
STOCK_SDK_TYPES = {1, 2, 5, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 20, 22, 23, 24, 25, 10240, 10241, 10242, 10243}
MAIXEMC_FORK_EXTRA = {6, 21}
MAIXEMC_FORK_TYPES = (STOCK_SDK_TYPES - {22, 23, 24, 25}) | MAIXEMC_FORK_EXTRA


def struct(name):
    """The cstruct type of a kpu.h structure name."""
    return getattr(v3, name)


def body_struct(code):
    """The cstruct type of a layer type's body, or None for types without one."""
    name = LAYER_TYPES.get(code, (None, None))[1]
    return struct(name) if name else None
