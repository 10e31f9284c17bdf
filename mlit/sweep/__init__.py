"""One sweep, stage by stage: the executor (`pipeline`), the compute phases (`phases`), the
dry run (`preview`), pre-flight checks (`preflight`) and the paper's protocol report
(`protocol_report`).
"""
