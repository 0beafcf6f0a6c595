"""kmodel v3, the format Kendryte's SDK loader (kpu.c) runs: its structures, reader, writer and a simulator of what
kpu.c computes for every layer type (the KPU through chip/, the CPU layer bodies here)."""
