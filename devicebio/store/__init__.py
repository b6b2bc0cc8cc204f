"""Device state at rest: the sealed :class:`Vault` and the typed records kept in it.

- :mod:`~devicebio.store.vault`: the vault (sealed, crash-safe, one file per record) and the
  key providers that open it.
"""

from __future__ import annotations

from devicebio.store.vault import KeyProvider, KeyringKey, PassphraseKey, RawKey, Vault

__all__ = ["KeyProvider", "KeyringKey", "PassphraseKey", "RawKey", "Vault"]
