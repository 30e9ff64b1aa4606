"""Node identity: keypairs, key files, recovery codes and the node directory."""
