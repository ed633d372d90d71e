"""Run comparison: ``python -m longseq.report inputs=[<run or eval dirs>] out=<dir>``."""
