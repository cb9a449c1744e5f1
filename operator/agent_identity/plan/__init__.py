"""Desired state and decisions as values: the children an identity becomes, what it should be now, and
how each child differs from its desired form. Pure.
"""
