"""The local multi-node test cluster behind `pk cluster` (docs/cluster.md).

:mod:`keynode.cluster.launcher` starts, drives and stops the nodes; :mod:`.procs` finds and
signals one node's agent; :mod:`.netns` makes and removes the network namespaces of
``--netns``; :mod:`.state` reads and writes ``cluster.json``.
"""
