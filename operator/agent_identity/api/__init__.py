"""The custom resources as pydantic models (the CRD's single source), their conditions and reasons,
TTL arithmetic. Pure.
"""
