"""kmodel v3 structures, field for field as the SDK's kpu.h declares them (dissect.cstruct definitions)."""
from dissect.cstruct import cstruct

V3_DEFINITIONS = """
struct kpu_kmodel_header_t {
    uint32 version;            /* 3 */
    uint32 flags;              /* bit 0: 8-bit weights */
    uint32 arch;               /* 0 = K210 */
    uint32 layers_length;
    uint32 max_start_address;
    uint32 main_mem_usage;
    uint32 output_count;
};

struct kpu_model_output_t { uint32 address; uint32 size; };
struct kpu_model_layer_header_t { uint32 type; uint32 body_size; };
struct kpu_model_shape_t { uint32 width; uint32 height; uint32 channels; };

struct kpu_model_conv_layer_argument_t {          /* K210_CONV 10240 */
    uint32 flags; uint32 main_mem_out_address;
    uint32 layer_offset; uint32 weights_offset; uint32 bn_offset; uint32 act_offset;
};
struct kpu_model_upload_layer_argument_t {        /* K210_UPLOAD 10243 */
    uint32 flags; uint32 main_mem_in_address; uint32 kpu_mem_out_address;
    uint32 width; uint32 height; uint32 channels;
};
struct kpu_model_add_padding_layer_argument_t {   /* K210_ADD_PADDING 10241 */
    uint32 flags; uint32 main_mem_in_address; uint32 kpu_mem_out_address; uint32 channels;
};
struct kpu_model_remove_padding_layer_argument_t {/* K210_REMOVE_PADDING 10242 */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 channels;
};
struct kpu_model_add_layer_argument_t {           /* ADD 1 */
    uint32 flags; uint32 main_mem_in_a_address; uint32 main_mem_in_b_address;
    uint32 main_mem_out_address; uint32 count;
};
struct kpu_model_quant_add_layer_argument_t {     /* QUANTIZED_ADD 2 */
    uint32 flags; uint32 main_mem_in_a_address; uint32 main_mem_in_b_address;
    uint32 main_mem_out_address; uint32 count;
    int32 in_a_offset; int32 in_a_mul; int32 in_a_shift;
    int32 in_b_offset; int32 in_b_mul; int32 in_b_shift;
    int32 out_offset; int32 out_mul; int32 out_shift;
};
struct kpu_model_gap2d_layer_argument_t {         /* GLOBAL_AVERAGE_POOL2D 5, QUANTIZED_ 6 (Maix-EMC fork) */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    uint32 kernel_size; uint32 channels;
};
struct kpu_model_quant_max_pool2d_layer_argument_t {  /* QUANTIZED_MAX_POOL2D 8 */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    kpu_model_shape_t in_shape; kpu_model_shape_t out_shape;
    uint32 kernel_width; uint32 kernel_height; uint32 stride_width; uint32 stride_height;
    uint32 padding_width; uint32 padding_height;
};
struct kpu_model_ave_pool2d_layer_argument_t {    /* AVERAGE_POOL2D 9, MAX_POOL2D 7 (nncase) */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    kpu_model_shape_t in_shape; kpu_model_shape_t out_shape;
    uint32 kernel_width; uint32 kernel_height; uint32 stride_width; uint32 stride_height;
    uint32 padding_width; uint32 padding_height; uint32 act;
};
struct kpu_model_quantize_layer_argument_t {      /* QUANTIZE 11 */
    uint32 flags; uint32 main_mem_in_address; uint32 mem_out_address; uint32 count;
    float scale; float bias;
};
struct kpu_model_dequantize_layer_argument_t {    /* DEQUANTIZE 12 */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 count;
    float scale; float bias;
};
struct kpu_model_requantize_layer_argument_t {    /* REQUANTIZE 13 */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 count;
    uint8 table[256];
};
struct kpu_model_l2_norm_layer_argument_t {       /* L2_NORMALIZATION 14 */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 channels;
};
struct kpu_model_softmax_layer_argument_t {       /* SOFTMAX 15 */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 channels;
};
struct kpu_model_logistic_layer_argument_t {      /* LOGISTIC 25 */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; uint32 channels;
};
struct kpu_model_concat_layer_argument_t {        /* CONCAT 16, QUANTIZED_CONCAT 17; input_count ranges follow */
    uint32 flags; uint32 main_mem_out_address; uint32 input_count;
};
struct kpu_model_memory_range_t { uint32 start; uint32 size; };
struct kpu_model_fully_connected_layer_argument_t {   /* FULLY_CONNECTED 18; f32 weights[oc][ic], bias[oc] follow */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    uint32 in_channels; uint32 out_channels; uint32 act;
};
struct kpu_model_tf_flatten_layer_argument_t {    /* TENSORFLOW_FLATTEN 20, QUANTIZED_ 21 (Maix-EMC fork) */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address; kpu_model_shape_t shape;
};
struct kpu_model_resize_nearest_neighbor_layer_argument_t {   /* 22, QUANTIZED_ 23 */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    kpu_model_shape_t in_shape; uint32 out_width; uint32 out_height; uint32 align_corners;
};
struct kpu_model_channelwise_dequant_argument_t { /* CHANNELWISE_DEQUANTIZE 24; {f32 scale, f32 bias}[channels] follow */
    uint32 flags; uint32 main_mem_in_address; uint32 main_mem_out_address;
    uint32 channels; uint32 channel_size;
};
"""

v3 = cstruct()
v3.load(V3_DEFINITIONS)

# kpu_model_layer_type_t: code -> (name, body struct or None)
LAYER_TYPES = {
    0: ("INVALID", None),
    1: ("ADD", "kpu_model_add_layer_argument_t"),
    2: ("QUANTIZED_ADD", "kpu_model_quant_add_layer_argument_t"),
    3: ("GLOBAL_MAX_POOL2D", None),
    4: ("QUANTIZED_GLOBAL_MAX_POOL2D", None),
    5: ("GLOBAL_AVERAGE_POOL2D", "kpu_model_gap2d_layer_argument_t"),
    6: ("QUANTIZED_GLOBAL_AVERAGE_POOL2D", "kpu_model_gap2d_layer_argument_t"),
    7: ("MAX_POOL2D", "kpu_model_ave_pool2d_layer_argument_t"),
    8: ("QUANTIZED_MAX_POOL2D", "kpu_model_quant_max_pool2d_layer_argument_t"),
    9: ("AVERAGE_POOL2D", "kpu_model_ave_pool2d_layer_argument_t"),
    10: ("QUANTIZED_AVERAGE_POOL2D", None),
    11: ("QUANTIZE", "kpu_model_quantize_layer_argument_t"),
    12: ("DEQUANTIZE", "kpu_model_dequantize_layer_argument_t"),
    13: ("REQUANTIZE", "kpu_model_requantize_layer_argument_t"),
    14: ("L2_NORMALIZATION", "kpu_model_l2_norm_layer_argument_t"),
    15: ("SOFTMAX", "kpu_model_softmax_layer_argument_t"),
    16: ("CONCAT", "kpu_model_concat_layer_argument_t"),
    17: ("QUANTIZED_CONCAT", "kpu_model_concat_layer_argument_t"),
    18: ("FULLY_CONNECTED", "kpu_model_fully_connected_layer_argument_t"),
    19: ("QUANTIZED_FULLY_CONNECTED", None),
    20: ("TENSORFLOW_FLATTEN", "kpu_model_tf_flatten_layer_argument_t"),
    21: ("QUANTIZED_TENSORFLOW_FLATTEN", "kpu_model_tf_flatten_layer_argument_t"),
    22: ("RESIZE_NEAREST_NEIGHBOR", "kpu_model_resize_nearest_neighbor_layer_argument_t"),
    23: ("QUANTIZED_RESIZE_NEAREST_NEIGHBOR", "kpu_model_resize_nearest_neighbor_layer_argument_t"),
    24: ("CHANNELWISE_DEQUANTIZE", "kpu_model_channelwise_dequant_argument_t"),
    25: ("LOGISTIC", "kpu_model_logistic_layer_argument_t"),
    10240: ("K210_CONV", "kpu_model_conv_layer_argument_t"),
    10241: ("K210_ADD_PADDING", "kpu_model_add_padding_layer_argument_t"),
    10242: ("K210_REMOVE_PADDING", "kpu_model_remove_padding_layer_argument_t"),
    10243: ("K210_UPLOAD", "kpu_model_upload_layer_argument_t"),
}
TYPE_CODES = {name: code for code, (name, _) in LAYER_TYPES.items()}

# What the stock SDK loader (HEAD) runs; the Maix-EMC fork adds 6 and 21 (spec 2.3).
STOCK_SDK_TYPES = {1, 2, 5, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 20, 22, 23, 24, 25, 10240, 10241, 10242, 10243}
MAIXEMC_FORK_EXTRA = {6, 21}


def struct(name):
    return getattr(v3, name)
