"""Plumbing: what every room may use and that knows nothing of the method.

The console (lines, progress, logs, errors as one line), Ctrl-C and SIGTERM as one interrupt, the
one atomic local write (`atomic`), free loopback ports (`ports`), and the environment a Ray that
mlit starts is given (`ingress`: Serve's HAProxy ingress).
"""
