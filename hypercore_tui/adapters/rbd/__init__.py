"""Ceph RBD through the ``rados``/``rbd`` Python bindings (Debian's python3-rados/-rbd).

Everything here blocks: services call it from a thread, never from an event loop.
Every call is bounded twice: by librados' own timeouts (:mod:`.library`) and by a
wall-clock limit on the thread doing the work (:mod:`.bounded`). One module per idea:

* :mod:`.library`: loading the bindings; the librados settings of every client
* :mod:`.conf`: checking a ceph.conf before librados reads it
* :mod:`.errors`: library exceptions as one-line ``HypercoreError`` subclasses
* :mod:`.bounded`: blocking work in a thread under a wall-clock limit
* :mod:`.results`: what the cluster answers (image stats, snapshots, cluster status)
* :mod:`.session`: :func:`~.session.connect` and the ``CephSession`` doing the work
"""
