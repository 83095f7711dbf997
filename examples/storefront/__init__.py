"""A demo storefront hosting the credit add-ons plugin (see ``app.py``)."""
