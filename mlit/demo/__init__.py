"""The embedded default's models: the demo base model (`base_model`) and the demo judge
fine-tuned from it (`judge_model`), both built locally and cached.
"""
