"""Credit add-ons for Flask storefronts: prepaid credits, a usage API, auto
top-up and signed webhooks. See the README for the whole picture."""

from storage import on_commit

from . import errors, ledger, signals
from .extension import AddonPlugin

__all__ = [
    "AddonPlugin",
    "errors",
    "ledger",
    "on_commit",
    "signals",
]
