"""autotransfer: pick, fine-tune and export the best TF-Hub backbone for a small labelled dataset.

Heavy imports (TensorFlow) happen on first use, so ``import autotransfer`` and the CLI's --help stay fast.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Result", "load_search_space", "run", "__version__"]

if TYPE_CHECKING:
    from autotransfer.api import run
    from autotransfer.config import load_search_space
    from autotransfer.result import Result


def __getattr__(name: str) -> Any:
    if name == "run":
        from autotransfer.api import run

        return run
    if name == "Result":
        from autotransfer.result import Result

        return Result
    if name == "load_search_space":
        from autotransfer.config import load_search_space

        return load_search_space
    raise AttributeError(f"module 'autotransfer' has no attribute {name!r}")
