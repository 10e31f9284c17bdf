"""The method of the paper as data and rules: languages, mixtures, experiments, the training
hyperparameters and ROUGE-L over every script. Reads no file but its own and imports no other room.
"""
