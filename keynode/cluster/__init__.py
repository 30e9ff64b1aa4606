"""The local multi-node test cluster behind `pk cluster` (docs/cluster.md).

:mod:`keynode.cluster.launcher` starts, drives and stops the nodes; :mod:`.netns` makes and
removes the network namespaces of ``--netns``; :mod:`.state` reads and writes ``cluster.json``.
"""
