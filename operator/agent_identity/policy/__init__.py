"""Who may ask for what: permission atoms, the policy checks, and the facts they judge (gathered
through lookups and an access-review port). Pure.
"""
