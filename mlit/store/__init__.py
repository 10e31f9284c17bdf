"""The content-addressed store: artifacts keyed by what determines them (`artifacts.Store`),
records in segments (`segments`), checksums (`checksums`), leases on model keys (`leases`) and what
a model reference is (`model_refs`: a directory, a hub id, a URI).
"""
