"""The plan: the sweep config (`config`) read once into typed parts (`plan`), model keys
(`model_keys`), how trials run (`compute`), which engine serves (`engine_choice`) and the cost
estimate (`estimate`). Reads the data; builds, trains and serves nothing.
"""
