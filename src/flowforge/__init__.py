"""flowforge: normalizing flows (RealNVP, Glow, FFJORD, neural spline flows) for PyTorch, with a command line.

>>> import torch, flowforge
>>> flow = flowforge.models.RealNVP(2, hidden=32, depth=2)
>>> flow.log_prob(torch.randn(3, 2)).shape
torch.Size([3])
"""

from flowforge.lazy import lazy_names

__version__ = "0.1.0"
__all__ = ["distributions", "models", "transforms", "Flow", "StandardNormal", "__version__"]
__getattr__, __dir__ = lazy_names(__name__, {"distributions": ".distributions", "models": ".models",
                                             "transforms": ".transforms", "Flow": ".distributions",
                                             "StandardNormal": ".distributions"})
