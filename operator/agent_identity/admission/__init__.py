"""What the admission webhooks decide, and the webhook configurations that register them."""
