"""What operators of the operator look at: /healthz, /readyz, /metrics and JWKS over HTTP, Prometheus
metrics, and the audit log.
"""
