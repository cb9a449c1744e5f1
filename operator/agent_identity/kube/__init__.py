"""The one request layer between the operator and the Kubernetes API: plain dicts, one method per
request, failures as one error type.
"""
