"""kmodel v4, the format of nncase v0.2's runtime: its structures, reader and node describers, writer (the lowered
layers rewritten as nncase nodes), and a simulator with one function per CPU opcode (ops_*.py)."""
