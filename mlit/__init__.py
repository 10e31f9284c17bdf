"""mlit: multilingual instruction tuning sweeps on Ray.

Importing the package is cheap on purpose: torch, Ray, transformers and litellm are imported only
inside the stages that need them, so `mlit --help`, the data layer and the mixture planner start fast
on any machine.
"""

__version__ = "0.1.0"
