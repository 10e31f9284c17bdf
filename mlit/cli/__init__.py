"""The `mlit` command line (`main`, one module per command group) and the sweep scripts' flags
(`flags`), generated from `SweepConfig`.
"""
