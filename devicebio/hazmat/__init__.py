"""Low-level primitives behind the vault and the ceremony. **Hazardous materials.**

Everything here is easy to misuse, and misuse silently loses a guarantee:

- :mod:`~devicebio.hazmat.credentials`: :class:`~devicebio.hazmat.credentials.Credentials`
  signs a WebAuthn assertion for *whatever* :class:`~devicebio.hazmat.credentials.UserVerification`
  it is handed. Any caller can make it sign "face, liveness passed" without a face in sight;
  the relying party would believe it.
- :mod:`~devicebio.hazmat.seal`: sealing without binding the right associated data.

App developers use :class:`devicebio.Authenticator` (which signs only what it verified itself)
and :class:`devicebio.Vault`, never these directly. Tests, test vectors and benchmarks that
need a credential without a face use them knowingly.
"""
