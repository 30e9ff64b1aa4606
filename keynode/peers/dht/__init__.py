"""DHT discovery (docs/spec/discovery.md). The only place that imports ``kademlia``.

Public API: :class:`Discovery` and :class:`DhtConfig`.
"""

import logging as _logging

from keynode.peers.dht.config import DhtConfig
from keynode.peers.dht.service import Discovery

# kademlia's crawler logs every lookup at INFO; our own loggers (keynode.peers.dht.*) say what matters.
_logging.getLogger("kademlia").setLevel(_logging.WARNING)

__all__ = ["DhtConfig", "Discovery"]
