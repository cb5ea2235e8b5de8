# How soak_oracle.c is compiled, wherever it is: libsoak_oracle.so (the Python worker loads it) and
# soak-runner (compiled in).  One list, so both workers compute the same numbers from the same logits.
# -O3: the exp and scan loops vectorise.  -ffp-contract=off: no fused multiply-adds (GCC fuses them in
# its GNU modes on FMA machines, not in its ISO modes; the runner builds as ISO C11).
set(SOAK_ORACLE_C_OPTIONS -O3 -fno-trapping-math -ffp-contract=off)
