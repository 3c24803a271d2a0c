"""Service-account keys and the OAuth2 JWT-bearer token endpoint, as google-auth uses them.

google-auth's ``service_account.Credentials.refresh`` posts
``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>`` to the key's
``token_uri``; the JWT is RS256-signed with the key's private key and carries ``iss`` (the
client email), ``aud`` (Google's own token endpoint, not the token_uri), ``scope`` (space-separated), ``iat`` and ``exp``.
"""

import base64
import binascii
import json
import secrets
from typing import Any

from attrs import frozen
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
CLOCK_SKEW = 300
# google-auth always addresses its assertion to Google's endpoint, whatever token_uri it posts to.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"


class InvalidGrant(Exception):
    """The token endpoint's 400: ``{"error": error, "error_description": str(self)}``."""

    def __init__(self, description: str, error: str = "invalid_grant") -> None:
        super().__init__(description)
        self.error = error


@frozen
class ServiceAccount:
    """A key the fake wrote; it keeps the public half to check assertions."""

    project_id: str
    client_email: str
    private_key_id: str
    private_key_pem: str
    public_key: rsa.RSAPublicKey
    token_uri: str

    @classmethod
    def generate(cls, token_uri: str, project_id: str = "fake-project") -> "ServiceAccount":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode("ascii")
        return cls(
            project_id=project_id,
            client_email=f"fakevertex@{project_id}.iam.gserviceaccount.com",
            private_key_id=secrets.token_hex(20),
            private_key_pem=pem,
            public_key=key.public_key(),
            token_uri=token_uri,
        )

    def info(self) -> dict[str, str]:
        """The service-account JSON key file's content."""
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.private_key_id,
            "private_key": self.private_key_pem,
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "universe_domain": "googleapis.com",
        }


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def verify_assertion(form: dict[str, list[str]], account: ServiceAccount, now: float) -> dict[str, Any]:
    """Check a token request's form fields; return the JWT claims or raise :class:`InvalidGrant`."""
    grant_type = form.get("grant_type", [""])[0]
    if grant_type != GRANT_TYPE:
        raise InvalidGrant(f"Invalid grant_type: {grant_type}", error="unsupported_grant_type")
    assertion = form.get("assertion", [""])[0]
    try:
        header_b64, claims_b64, signature_b64 = assertion.split(".")
        header = json.loads(_b64url(header_b64))
        claims = json.loads(_b64url(claims_b64))
        signature = _b64url(signature_b64)
    except (ValueError, binascii.Error):
        raise InvalidGrant("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.")
    if header.get("alg") != "RS256":
        raise InvalidGrant("Invalid JWT Signature.")
    try:
        account.public_key.verify(
            signature, f"{header_b64}.{claims_b64}".encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        raise InvalidGrant("Invalid JWT Signature.")
    if claims.get("iss") != account.client_email:
        raise InvalidGrant("Invalid JWT: iss does not match a known service account.")
    if claims.get("aud") not in (account.token_uri, GOOGLE_TOKEN_AUDIENCE):
        raise InvalidGrant(f"Invalid JWT: aud must be {GOOGLE_TOKEN_AUDIENCE} or {account.token_uri}.")
    if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
        raise InvalidGrant("Invalid OAuth scope or ID token audience provided.", error="invalid_scope")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
        raise InvalidGrant("Invalid JWT: exp and iat are required.")
    if exp <= now or iat > now + CLOCK_SKEW or exp - iat > 3600:
        raise InvalidGrant(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. "
            "Check your iat and exp values in the JWT claim."
        )
    return claims
