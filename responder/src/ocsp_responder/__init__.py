"""ocsp_responder: an RFC 6960 OCSP responder for private PKIs.

Modules, in the order a request flows: :mod:`.http` (WSGI), :mod:`.request` (DER ->
typed request), :mod:`.responder` (issuer lookup, status, cache, signing),
:mod:`.issuers`, :mod:`.sources` (index.txt, CRL), :mod:`.signing`, :mod:`.cache`,
:mod:`.config`, :mod:`.cli`.
"""

__version__ = "0.1.0"
