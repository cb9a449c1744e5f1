"""A real Kubernetes control plane on loopback (etcd, kube-apiserver, kube-controller-manager), for
the tests and ``make demo``.
"""
