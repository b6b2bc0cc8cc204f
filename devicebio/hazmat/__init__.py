"""Low-level primitives behind the vault. **Hazardous materials.**

Everything here is easy to misuse: sealing without binding the right associated data, or
writing files without the full atomic sequence, silently loses the guarantees the vault
gives. App developers use :class:`devicebio.store.vault.Vault`, never these functions directly.
"""
