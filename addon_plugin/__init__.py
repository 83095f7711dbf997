"""Credit add-ons for Flask storefronts: prepaid credits, a usage API, auto
top-up and signed webhooks. See the README for the whole picture.

The names below are the public surface a host may rely on (for a module, the
names in its ``__all__``); everything else is internal and may change.
"""

from storage import migrate, on_commit

from . import accounts, errors, merchants, products, signals, worker
from .extension import AddonPlugin
from .hooks import SignedInBuyer
from .present import account_body, entry_body, product_body
from .topup.gateways import ChargePending, Declined, Gateway, GatewayError, GatewayUnavailable, current_gateway

__all__ = [
    "AddonPlugin",
    "ChargePending",
    "Declined",
    "Gateway",
    "GatewayError",
    "GatewayUnavailable",
    "SignedInBuyer",
    "account_body",
    "accounts",
    "current_gateway",
    "entry_body",
    "errors",
    "merchants",
    "migrate",
    "on_commit",
    "product_body",
    "products",
    "signals",
    "worker",
]
