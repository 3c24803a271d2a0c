"""TLS listeners: ``--listen ssl:8443:privateKey=KEY:certKey=CERT``, reloaded on SIGHUP.

Twisted's own ``ssl:`` endpoint reads its files once, so a renewed certificate
would need a restart.  Here a listener's TLS is a :class:`Certificates`, a
connection creator whose context is swapped by :meth:`Certificates.reload`:
each new handshake uses the context of its moment, while a connection already
open keeps the one it started with (OpenSSL keeps a connection's context alive).
A certificate that does not load leaves the previous one serving.

TLS is also served on sockets that gatewayd does not bind, with the same options
after their description: ``systemd:domain=INET:index=0:privateKey=...:certKey=...``
(socket activation) and the ``adopt:`` sockets of ``--workers``.

Only HTTP/1.1 is offered by ALPN (see the README's TLS section for why not h2).
"""

from __future__ import annotations

import re
from typing import Any

from attrs import define, field, frozen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from OpenSSL import SSL, crypto
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLServerConnectionCreator,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import CertificateOptions, TLSVersion
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

#: The options that make a listener serve TLS, as Twisted's ``ssl:`` endpoint spells them.
TLS_OPTIONS = ("privateKey", "certKey", "extraCertChain")
#: Listener kinds that take them: ``ssl:`` binds a port as ``tcp:`` does; the others serve a
#: socket handed over by systemd or by the ``--workers`` parent.
TLS_KINDS = ("ssl", "systemd", "adopt")
#: The protocols offered by ALPN.
ALPN = (b"http/1.1",)

log = Logger()


class CertificateError(ValueError):
    """A certificate or key that cannot serve; the message names the file, never its content."""


@frozen
class TLSFiles:
    """Where one listener's key, certificate and extra chain are."""

    key: str
    certificate: str
    chain: str | None = None

    def options(self) -> str:
        """The files as endpoint options, for a worker's ``adopt:`` description."""
        named = [("privateKey", self.key), ("certKey", self.certificate)]
        if self.chain is not None:
            named.append(("extraCertChain", self.chain))
        return "".join(f":{name}={_escape(value)}" for name, value in named)


def split_listen(description: str) -> tuple[str, TLSFiles | None]:
    """The socket part of a ``--listen`` description, and its TLS files (None: plain HTTP).

    ``ssl:PORT[:interface=H][:backlog=N]:privateKey=K[:certKey=C][:extraCertChain=E]``
    becomes ``tcp:PORT...`` with TLS; ``certKey`` defaults to ``privateKey`` (one file
    holding both), as in Twisted.  Unlike Twisted's ``ssl:``, ``privateKey`` is required
    (Twisted would read ``server.pem`` from the working directory) and ``sslmethod`` and
    ``dhParameters`` are refused: TLS 1.2 and 1.3 with ECDHE are what is served.
    """
    kind, *parts = re.split(r"(?<!\\):", description)
    files: dict[str, str] = {}
    rest = []
    for part in parts:
        name, equals, value = part.partition("=")
        if equals and name in TLS_OPTIONS:
            files[name] = value.replace("\\:", ":")
        elif equals and kind == "ssl" and name in ("sslmethod", "dhParameters"):
            raise ValueError(
                f"--listen {description}: {name}= is not supported: gatewayd serves TLS 1.2 and 1.3 "
                "with its own ciphers"
            )
        else:
            rest.append(part)
    if kind == "ssl" and "privateKey" not in files:
        raise ValueError(f"--listen {description}: an ssl: listener needs privateKey=PATH (and certKey=PATH)")
    if not files:
        return description, None
    if kind not in TLS_KINDS:
        raise ValueError(
            f"--listen {description}: privateKey=, certKey= and extraCertChain= are for ssl: "
            "(or systemd: and adopt:) listeners"
        )
    if "privateKey" not in files:
        raise ValueError(f"--listen {description}: certKey= and extraCertChain= need privateKey=PATH")
    tls = TLSFiles(files["privateKey"], files.get("certKey", files["privateKey"]), files.get("extraCertChain"))
    return ":".join(["tcp" if kind == "ssl" else kind, *rest]), tls


def _escape(value: str) -> str:
    return value.replace(":", "\\:")


def load(files: TLSFiles) -> SSL.Context:
    """A server context for ``files``: TLS 1.2 or later, HTTP/1.1 by ALPN.

    The certificate file may hold the whole chain (leaf first, as Let's Encrypt's
    ``fullchain.pem``); ``extraCertChain`` adds more.  The key must be unencrypted.
    """
    leaf, *chain = _certificates(files.certificate)
    if files.chain is not None:
        chain += _certificates(files.chain)
    key = _private_key(files.key)
    # Twisted's choices (ciphers, curves, session cache, options) on a context without a
    # certificate, then the certificate as cryptography objects: pyOpenSSL deprecates its own.
    context = CertificateOptions(raiseMinimumTo=TLSVersion.TLSv1_2, acceptableProtocols=list(ALPN)).getContext()
    context.use_certificate(leaf)
    for each in chain:
        context.add_extra_chain_cert(each)
    try:
        context.use_privatekey(key)
        context.check_privatekey()
    except SSL.Error:
        raise CertificateError(
            f"the private key in {files.key} does not match the certificate in {files.certificate}"
        ) from None
    return context


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise CertificateError(f"cannot read {path}: {error.strerror}") from None


def _certificates(path: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(_read(path))
    except ValueError:
        raise CertificateError(f"{path} holds no PEM certificate") from None


def _private_key(path: str) -> Any:
    data = _read(path)
    # The key may share its file with the certificate (certKey omitted): read its own block.
    found = re.search(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.*?-----END \1PRIVATE KEY-----", data, re.S)
    try:
        return load_pem_private_key(found.group(0) if found else data, password=None)
    except TypeError:
        raise CertificateError(f"the private key in {path} is encrypted; gatewayd needs it unencrypted") from None
    except (ValueError, crypto.Error):
        raise CertificateError(f"{path} holds no PEM private key") from None


@implementer(IOpenSSLServerConnectionCreator)
@define
class Certificates:
    """One listener's TLS: the context new handshakes use, swapped by :meth:`reload`."""

    files: TLSFiles
    _context: SSL.Context = field(init=False)

    def __attrs_post_init__(self) -> None:
        self._context = load(self.files)

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        return SSL.Connection(self._context, None)

    def reload(self) -> str | None:
        """Read the files again; the problem (naming the file) if the previous ones keep serving."""
        try:
            self._context = load(self.files)
        except CertificateError as error:
            log.error(
                "TLS certificate not reloaded, still serving the previous one: {problem}", problem=str(error)
            )
            return str(error)
        log.info("TLS certificate reloaded from {certificate}", certificate=self.files.certificate)
        return None


@implementer(IStreamServerEndpoint)
@frozen
class TLSEndpoint:
    """Serves TLS with ``certificates`` on the sockets of another endpoint."""

    inner: IStreamServerEndpoint
    certificates: Certificates

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.inner.listen(TLSMemoryBIOFactory(self.certificates, False, factory))


def listener(reactor: Any, description: str) -> tuple[IStreamServerEndpoint, Certificates | None]:
    """The endpoint of one ``--listen`` description, and its certificates if it serves TLS.

    Raises :class:`CertificateError` if the files cannot serve, ValueError if the
    description is not one gatewayd takes.
    """
    inner, files = split_listen(description)
    endpoint = serverFromString(reactor, inner)
    if files is None:
        return endpoint, None
    certificates = Certificates(files)
    return TLSEndpoint(endpoint, certificates), certificates
