"""The operator process: typed configuration, start-up, the kopf handlers, and its own least-privilege
RBAC as data.
"""
