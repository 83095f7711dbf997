"""Money: ``Decimal`` amounts with an ISO 4217 currency, stored as integer
minor units (cents). Never a float.

The minor-unit digits come from ISO 4217 (the list Stripe and others use:
zero-decimal currencies such as JPY, three-decimal ones such as KWD).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["CURRENCIES", "MAX_MINOR", "minor_digits", "to_minor", "from_minor", "parse_price"]

_ZERO_DECIMAL = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMAL = "BHD IQD JOD KWD LYD OMR TND"
_TWO_DECIMAL = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD "
    "GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD "
    "MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP "
    "PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS "
    "TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWL"
)

#: ISO 4217 code → digits after the decimal point.
CURRENCIES: dict[str, int] = {
    **{code: 0 for code in _ZERO_DECIMAL.split()},
    **{code: 2 for code in _TWO_DECIMAL.split()},
    **{code: 3 for code in _THREE_DECIMAL.split()},
}

#: The most minor units an amount column holds (a signed 64-bit integer).
MAX_MINOR = 2**63 - 1


def minor_digits(currency: str) -> int:
    """How many decimal digits the currency has (``KeyError`` if unknown)."""
    return CURRENCIES[currency]


def to_minor(amount: Decimal, currency: str) -> int:
    """``Decimal("19.00"), "USD"`` → ``1900``; exact or ``ValueError``."""
    scaled = amount.scaleb(minor_digits(currency))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more digits than {currency} allows")
    return int(scaled)


def from_minor(minor: int, currency: str) -> Decimal:
    """``1900, "USD"`` → ``Decimal("19.00")`` (always the currency's digits)."""
    digits = minor_digits(currency)
    return Decimal(minor).scaleb(-digits).quantize(Decimal(1).scaleb(-digits))


def parse_price(text: str, currency: str) -> Decimal:
    """A price string as a positive Decimal with at most the currency's digits,
    or ``ValueError`` saying what is wrong."""
    try:
        amount = Decimal(text)
    except (InvalidOperation, TypeError):
        raise ValueError("Not a decimal number.") from None
    if not amount.is_finite() or amount <= 0:
        raise ValueError("Must be a number greater than 0.")
    exponent = amount.as_tuple().exponent  # an int: the amount is finite
    if isinstance(exponent, int) and -exponent > minor_digits(currency):
        raise ValueError(f"At most {minor_digits(currency)} decimal places for {currency}.")
    if amount >= Decimal(10) ** 15:
        raise ValueError("Too large.")
    return amount
