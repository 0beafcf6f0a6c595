"""How emc plans a graph for the K210: quantisation of KPU layers, activation-table fitting, convolution planning,
the lowering and its table of handlers (graph op kind -> device layers), and KPU RAM / main memory planning.
Builds on chip/; the formats (v3/, v4/) turn its layers into files."""
