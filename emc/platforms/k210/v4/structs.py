"""kmodel v4 structures (nncase v0.2.0-beta4 runtime), field for field, as dissect.cstruct definitions.

Variable-length parts of a node body (weights, bias, concat inputs, nnil code, the KPU blocks) follow the fixed
part named here; v4.reader's TAIL_PARSERS read them. All integers are little-endian; no struct has holes.
"""
from dissect.cstruct import cstruct

MODEL_IDENTIFIER = 0x4B4D444C          # the C multi-character constant 'KMDL', stored LE: bytes b"LDMK"
MODEL_VERSION = 4

V4_DEFINITIONS = """
typedef int32 runtime_shape_t[4];                 /* always 4-D, N C H W (NHWC for the cpu_* ops) */

struct model_header {
    uint32 identifier;          /* 0x4B4D444C, bytes "LDMK" */
    uint32 version;             /* 4 */
    uint32 flags;               /* 0 */
    uint32 target;              /* 0 = CPU, 1 = K210 */
    uint32 constants;           /* bytes of the constants image */
    uint32 main_mem;            /* bytes of main memory the runtime allocates */
    uint32 nodes;
    uint32 inputs;
    uint32 outputs;
    uint32 reserved0;           /* left uninitialised by nncase's writer */
};

struct memory_range {
    uint32 memory_type;         /* 0 const, 1 main, 2 k210_kpu */
    uint32 datatype;            /* 0 float32, 1 uint8 */
    uint32 start;               /* byte offset in that memory */
    uint32 size;                /* bytes */
};

struct node_header { uint32 opcode; uint32 body_size; };
struct padding { int32 before; int32 after; };
struct value_range { float min; float max; };
struct quant_param { int32 zero_point; float scale; };          /* q = x * scale + zero_point */
struct scalar { uint32 type; uint8 storage[4]; };

/* ---- neutral ops (opcodes 0x00-0x14) ---- */
struct binary_options {
    memory_range input_a; memory_range input_b; memory_range output; uint32 binary_op;
    runtime_shape_t in_a_shape; runtime_shape_t in_b_shape; runtime_shape_t out_shape;
    value_range fused_activation;
};
struct quantized_binary_options {
    memory_range input_a; memory_range input_b; memory_range output; uint32 binary_op;
    runtime_shape_t in_a_shape; runtime_shape_t in_b_shape; runtime_shape_t out_shape;
    int32 input_a_offset; int32 input_a_mul; int32 input_a_shift;
    int32 input_b_offset; int32 input_b_mul; int32 input_b_shift;
    int32 output_offset; int32 output_mul; int32 output_shift;
};
struct concat_options {         /* + memory_range inputs[inputs_count], int32 dims[inputs_count] */
    memory_range output; uint32 inner_size; uint32 outer_size; uint32 inputs_count;
};
struct conv2d_options {         /* + float weights[oc * (ic / groups) * fh * fw], float bias[oc] */
    memory_range input; memory_range output; runtime_shape_t in_shape; int32 groups; int32 out_channels;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w; value_range fused_activation;
};
struct dequantize_options { memory_range input; memory_range output; quant_param quant_param; };
struct matmul_options {         /* + float bias[b_cols] */
    memory_range input_a; memory_range input_b; memory_range output;
    int32 a_rows; int32 a_cols; int32 b_cols; value_range fused_activation;
};
struct pad_options {
    memory_range input; memory_range output; runtime_shape_t in_shape; padding paddings[4]; scalar pad_value;
};
struct quantize_options { memory_range input; memory_range output; quant_param quant_param; };
struct reduce_options {
    memory_range input; memory_range output; uint32 reduce_op;
    runtime_shape_t in_shape; runtime_shape_t out_shape; float init_value;
};
struct reduce_window2d_options {
    memory_range input; memory_range output; uint32 reduce_op; runtime_shape_t in_shape;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w; float init_value; value_range fused_activation;
};
struct memory_copy_options { memory_range input; memory_range output; };
struct resize_image_options {
    memory_range input; memory_range output; runtime_shape_t in_shape; int32 out_h; int32 out_w;
    uint32 mode;                /* 0 bilinear, 1 nearest neighbor */
    uint8 align_corners; uint8 tail_padding[3];                 /* C bool + struct tail padding (uninitialised) */
};
struct softmax_options { memory_range input; memory_range output; int32 inner_size; int32 outer_size; float beta; };
struct transpose_options { memory_range input; memory_range output; runtime_shape_t in_shape; runtime_shape_t perm; };
struct strided_slice_options {
    memory_range input; memory_range output; runtime_shape_t in_shape;
    runtime_shape_t begin; runtime_shape_t end; runtime_shape_t strides;
    int32 begin_mask; int32 end_mask; int32 ellipsis_mask; int32 new_axis_mask; int32 shrink_axis_mask;
};
struct unary_options { memory_range input; memory_range output; uint32 unary_op; };
struct quantized_conv2d_options {   /* + int32 bias[oc], uint8 weights[oc * (ic / groups) * fh * fw] */
    memory_range input; memory_range output; runtime_shape_t in_shape; int32 groups; int32 out_channels;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w;
    int32 input_offset; int32 filter_offset; int32 output_mul; int32 output_shift; int32 output_offset;
};
struct quantized_matmul_options {   /* + int32 bias[b_cols] */
    memory_range input_a; memory_range input_b; memory_range output;
    int32 a_rows; int32 a_cols; int32 b_cols;
    int32 input_a_offset; int32 input_b_offset; int32 output_mul; int32 output_shift; int32 output_offset;
};
struct table_lookup1d_options { memory_range input; memory_range table; memory_range output; };
struct conv2d_transpose_options {   /* + float weights[oc * (ic / groups) * fh * fw], bias[oc]; oc = out_shape[1] */
    memory_range input; memory_range output; runtime_shape_t in_shape; runtime_shape_t out_shape; int32 groups;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w; value_range fused_activation;
};
struct nnil_unary_method_options { memory_range input; memory_range output; };   /* + nnil byte code to the end */

/* ---- CPU-target ops (0x1001-0x1005, NHWC) ---- */
struct cpu_conv2d_options {         /* + float weights[oc][fh][fw][ic], float bias[oc] */
    memory_range input; memory_range output; runtime_shape_t in_shape; int32 out_channels;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w; value_range fused_activation;
};
struct cpu_depthwise_conv2d_options {   /* + float weights[c][fh][fw], float bias[c] */
    memory_range input; memory_range output; runtime_shape_t in_shape;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w; value_range fused_activation;
};
struct cpu_reduce_window2d_options {
    memory_range input; memory_range output; uint32 reduce_op; runtime_shape_t in_shape;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w; float init_value; value_range fused_activation;
};
struct cpu_quantized_conv2d_options {   /* + uint8 weights[oc][fh][fw][ic], int32 bias[oc] */
    memory_range input; memory_range output; runtime_shape_t in_shape; int32 out_channels;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w;
    int32 input_offset; int32 filter_offset; int32 output_mul; int32 output_shift; int32 output_offset;
};
struct cpu_quantized_depthwise_conv2d_options {   /* + uint8 weights[c][fh][fw], int32 bias[c] */
    memory_range input; memory_range output; runtime_shape_t in_shape;
    padding padding_h; padding padding_w; int32 filter_h; int32 filter_w; int32 stride_h; int32 stride_w;
    int32 dilation_h; int32 dilation_w;
    int32 input_offset; int32 filter_offset; int32 output_mul; int32 output_shift; int32 output_offset;
};

/* ---- K210 ops (0x2001-0x2002) ---- */
struct kpu_upload_options { memory_range input; memory_range output; runtime_shape_t in_shape; };
struct kpu_conv2d_options {
    memory_range main_mem_output;   /* all zero: no copy to main memory */
    int32 batches;
    int32 reserved0;
    uint64 layer[12];               /* the KPU layer argument; the three address words hold skip counts */
};                                  /* + skip, bn u64[oc]; skip, act table (144 B); skip, uint8 weights */
"""

v4 = cstruct()
v4.load(V4_DEFINITIONS)

MEMORY_TYPES = {0: "const", 1: "main", 2: "kpu"}
DATATYPES = {0: ("f32", 4), 1: ("u8", 1)}
TARGETS = {0: "cpu", 1: "k210"}
BINARY_OPS = {0: "add", 1: "sub", 2: "mul", 3: "div", 4: "min", 5: "max"}
REDUCE_OPS = {0: "mean", 1: "min", 2: "max", 3: "sum"}
UNARY_OPS = {0: "abs", 1: "ceil", 2: "cos", 3: "exp", 4: "floor", 5: "log", 6: "neg", 7: "rsqrt", 8: "sin",
             9: "square"}
RESIZE_MODES = {0: "bilinear", 1: "nearest"}
NNIL_OPS = {0x00: "nop", 0x01: "dup", 0x02: "pop", 0x03: "lda_0", 0x04: "ldc_r4_0", 0x05: "ldc_r4_1",
            0x06: "ldc_r4", 0x20: "abs", 0x21: "ceil", 0x22: "cos", 0x23: "exp", 0x24: "floor", 0x25: "log",
            0x26: "neg", 0x27: "rsqrt", 0x28: "sin", 0x29: "square", 0x40: "add", 0x41: "sub", 0x42: "mul",
            0x43: "div", 0x44: "min", 0x45: "max", 0x80: "clamp", 0xA0: "ret"}
NNIL_STACK = 64

KPU_RAM_BYTES = 2 * 1024 * 1024
K210_SRAM = 8 * 1024 * 1024             # the chip's whole SRAM bounds main_mem


def struct(name):
    """The cstruct type of this name."""
    return getattr(v4, name)
