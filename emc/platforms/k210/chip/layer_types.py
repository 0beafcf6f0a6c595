"""The layer vocabularies of the K210's two loaders, shared by the lowering and both file formats: kmodel v3's
`kpu_model_layer_type_t` codes (Kendryte SDK kpu.c) and kmodel v4's opcodes (nncase v0.2.0-beta4 runtime).

The lowering emits layers named here; v3/ and v4/ read, write and run them.
"""

# kpu_model_layer_type_t: code -> (name, body struct or None). Types 3, 4, 10 and 19 have no body anywhere.
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
    23: ("QUANTIZED_RESIZE_NEAREST_NEIGHBOR", "kpu_model_quant_resize_nearest_neighbor_layer_argument_t"),
    24: ("CHANNELWISE_DEQUANTIZE", "kpu_model_channelwise_dequant_argument_t"),
    25: ("LOGISTIC", "kpu_model_logistic_layer_argument_t"),
    10240: ("K210_CONV", "kpu_model_conv_layer_argument_t"),
    10241: ("K210_ADD_PADDING", "kpu_model_add_padding_layer_argument_t"),
    10242: ("K210_REMOVE_PADDING", "kpu_model_remove_padding_layer_argument_t"),
    10243: ("K210_UPLOAD", "kpu_model_upload_layer_argument_t"),
}
TYPE_CODES = {name: code for code, (name, _) in LAYER_TYPES.items()}

# runtime_op.def of nncase v0.2.0-beta4: opcode -> (name, body struct, unit)
OPCODES = {
    0x00: ("binary", "binary_options", "CPU"),
    0x01: ("concat", "concat_options", "CPU"),
    0x02: ("conv2d", "conv2d_options", "CPU"),
    0x03: ("dequantize", "dequantize_options", "CPU"),
    0x04: ("matmul", "matmul_options", "CPU"),
    0x05: ("pad", "pad_options", "CPU"),
    0x06: ("quantize", "quantize_options", "CPU"),
    0x07: ("reduce", "reduce_options", "CPU"),
    0x08: ("reduce_window2d", "reduce_window2d_options", "CPU"),
    0x09: ("memory_copy", "memory_copy_options", "CPU"),
    0x0A: ("resize_image", "resize_image_options", "CPU"),
    0x0B: ("softmax", "softmax_options", "CPU"),
    0x0C: ("transpose", "transpose_options", "CPU"),
    0x0D: ("strided_slice", "strided_slice_options", "CPU"),
    0x0E: ("unary", "unary_options", "CPU"),
    0x0F: ("quantized_conv2d", "quantized_conv2d_options", "CPU"),
    0x10: ("quantized_matmul", "quantized_matmul_options", "CPU"),
    0x11: ("quantized_binary", "quantized_binary_options", "CPU"),
    0x12: ("table_lookup1d", "table_lookup1d_options", "CPU"),
    0x13: ("conv2d_transpose", "conv2d_transpose_options", "CPU"),
    0x14: ("nnil_unary_method", "nnil_unary_method_options", "CPU"),
    0x1001: ("cpu_conv2d", "cpu_conv2d_options", "CPU"),
    0x1002: ("cpu_depthwise_conv2d", "cpu_depthwise_conv2d_options", "CPU"),
    0x1003: ("cpu_reduce_window2d", "cpu_reduce_window2d_options", "CPU"),
    0x1004: ("cpu_quantized_conv2d", "cpu_quantized_conv2d_options", "CPU"),
    0x1005: ("cpu_quantized_depthwise_conv2d", "cpu_quantized_depthwise_conv2d_options", "CPU"),
    0x2001: ("kpu_upload", "kpu_upload_options", "KPU"),
    0x2002: ("kpu_conv2d", "kpu_conv2d_options", "KPU"),
}
OPCODE_BY_NAME = {name: code for code, (name, _, _) in OPCODES.items()}
