"""Webhooks: signed, durable, retried delivery of balance events to merchants."""
