"""What the K210 computes, shared by both kmodel formats: the KPU's arithmetic and limits (convolution, batch-norm,
activation table, pooling, KPU RAM layout), the RISC-V CPU's float32 arithmetic, the loaders' layer vocabularies,
and how an image becomes the device's uint8 CHW input. Imports nothing else of the K210 platform."""
