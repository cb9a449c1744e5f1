"""For users, not the operator: the Python API for orchestrators and the ``kubectl agent`` plugin.
Uses the API and the request layer, never the operator's internals.
"""
