"""Delegation assertions (signed JWTs), creator seals (HMAC), the rotating key rings behind both and
where they are stored, and X.509 for the webhook.
"""
