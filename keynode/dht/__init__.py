"""DHT discovery (docs/spec/discovery.md). The only place that imports ``kademlia``.

Public API: :class:`Discovery` and :class:`DhtConfig`.
"""

from keynode.dht.config import DhtConfig
from keynode.dht.service import Discovery

__all__ = ["DhtConfig", "Discovery"]
