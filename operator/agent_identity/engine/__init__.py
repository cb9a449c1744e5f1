"""Watch, queue, reconcile: the controller's cache and work queue, the reconciler, child watches,
leader election, resync, and the supervisor every loop runs under.
"""
