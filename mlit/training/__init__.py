"""Training: the Ray Tune phase (`trials`), one Train + DeepSpeed run (`trainer`), the
checkpoint rule (`selection`: best dev ROUGE-L) and checkpoints in the store (`checkpoints`).
"""
