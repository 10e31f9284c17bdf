"""The parallel dataset and how it is made: loading and validation (`dataset`), the paper's
sources and data (`paper_sources`, `paper_data`), machine translation and its checks, and language
identification (`langid`).
"""
