"""Encrypted git-backed vaults (DESIGN.md section 3, docs/spec/vault-format.md).

The only package that imports pygit2. Callers use :class:`polykey.vaults.service.VaultService`.
"""
