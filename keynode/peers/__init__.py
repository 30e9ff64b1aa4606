"""Everything between this node and other nodes: the peer network's supervision
(:mod:`keynode.peers.network`), the Noise transport and the Kademlia discovery."""
