"""Models room: every table of authmd. Times are naive UTC datetimes."""
from datetime import datetime
from typing import Optional

from sqlalchemy import (BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String,
                        Text, UniqueConstraint)
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .extensions import db

# BigInteger ids that still autoincrement on SQLite
BigId = BigInteger().with_variant(Integer(), "sqlite")


class User(UserMixin, db.Model):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[Optional[str]] = mapped_column(String(320), unique=True)
    email_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    phone: Mapped[Optional[str]] = mapped_column(String(40), index=True)
    phone_verified: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[Optional[str]] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[Optional[str]] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    source: Mapped[str] = mapped_column(String(40), default="jit")
    # copied into a console session at sign-in; bumping it (users.end_sessions) ends every session
    # opened before, so a copied cookie dies with sign-out, a new password, demotion or disabling
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    def public(self) -> dict:
        return {"id": self.id, "email": self.email, "email_verified": bool(self.email_verified),
                "name": self.name}


class Scope(db.Model):
    __tablename__ = "scopes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    pre_claim: Mapped[bool] = mapped_column(Boolean, default=False)
    post_claim: Mapped[bool] = mapped_column(Boolean, default=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


# the latest protocol's wire `type` for each registration type (v0.1 answers with the type itself)
WIRE_TYPES = {"anonymous": "anonymous", "service-auth": "service_auth", "agent-provider": "identity_assertion"}


class Registration(db.Model):
    __tablename__ = "registrations"
    # the console lists registrations newest first with keyset pagination on (created_at, id), filtered by
    # status, flow or issuer; these keep each filtered page an index walk, not a sort. They also serve
    # lookups by status, type, iss or created_at alone (a composite index's first column), so those
    # columns have no index of their own: every index is written by every registration (bench/README.md)
    __table_args__ = (Index("ix_registrations_created_id", "created_at", "id"),
                      Index("ix_registrations_status_created", "status", "created_at", "id"),
                      Index("ix_registrations_type_created", "type", "created_at", "id"),
                      Index("ix_registrations_iss_created", "iss", "created_at", "id"))
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # anonymous | email-verification | agent-provider
    type: Mapped[str] = mapped_column(String(30))
    # pending (unclaimed) | claimed | active (agent-provider) | expired | revoked
    status: Mapped[str] = mapped_column(String(20))
    email: Mapped[Optional[str]] = mapped_column(String(320), index=True)
    requested_credential_type: Mapped[str] = mapped_column(String(20), default="api_key")
    claim_token_digest: Mapped[Optional[str]] = mapped_column(String(64), unique=True)
    claim_expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime, index=True)
    failed_otp_count: Mapped[int] = mapped_column(Integer, default=0)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"), index=True)
    delegation_id: Mapped[Optional[int]] = mapped_column(ForeignKey("delegations.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    claimed_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    ended_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    ip: Mapped[Optional[str]] = mapped_column(String(64))
    user_agent: Mapped[Optional[str]] = mapped_column(String(300))
    agent_platform: Mapped[Optional[str]] = mapped_column(String(200))
    iss: Mapped[Optional[str]] = mapped_column(String(500))
    # v0.1 (/agent/auth) | latest (/agent/identity): a claim token works only in the family that issued it
    protocol: Mapped[str] = mapped_column(String(10), default="v0.1", server_default="v0.1")

    user = relationship("User", foreign_keys=[user_id])


class ClaimAttempt(db.Model):
    __tablename__ = "claim_attempts"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    registration_id: Mapped[str] = mapped_column(ForeignKey("registrations.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    link_token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    link_expires_at: Mapped[datetime] = mapped_column(DateTime)
    # initiated | completed | superseded | denied
    status: Mapped[str] = mapped_column(String(20), index=True)
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)
    otp_digest: Mapped[Optional[str]] = mapped_column(String(64))
    otp_expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    otp_minted_count: Mapped[int] = mapped_column(Integer, default=0)
    otp_failed_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    ip: Mapped[Optional[str]] = mapped_column(String(64))
    user_agent: Mapped[Optional[str]] = mapped_column(String(300))
    # latest: `email` holds the normalised login_hint, the otp_* columns the user_code; a signed-in user
    # whose email is the login_hint pressed Authorize at these
    protocol: Mapped[str] = mapped_column(String(10), default="v0.1", server_default="v0.1")
    confirmed_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    confirmed_user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))

    registration = relationship("Registration", lazy="joined")


class Credential(db.Model):
    __tablename__ = "credentials"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # the hot-path index
    prefix: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(20))  # api_key | access_token
    scopes: Mapped[str] = mapped_column(Text, default="")  # space separated
    registration_id: Mapped[str] = mapped_column(ForeignKey("registrations.id"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"), index=True)
    delegation_id: Mapped[Optional[int]] = mapped_column(ForeignKey("delegations.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    protocol: Mapped[str] = mapped_column(String(10), default="v0.1", server_default="v0.1")
    resource: Mapped[Optional[str]] = mapped_column(String(500))  # latest: what /oauth2/token was asked for

    @property
    def scope_list(self) -> list:
        return self.scopes.split() if self.scopes else []


class RefreshToken(db.Model):
    """The latest protocol's rotating refresh tokens (digest only). A family is one chain of rotations:
    a spent token presented again revokes the whole family."""
    __tablename__ = "refresh_tokens"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    family_id: Mapped[str] = mapped_column(String(40), index=True)
    registration_id: Mapped[str] = mapped_column(ForeignKey("registrations.id"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    spent_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime)


class SigningKey(db.Model):
    """The service's own signing keys (ES256). The newest unretired key signs; a key is published and
    accepted until publish_until (unset while it may still sign)."""
    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(64), primary_key=True)  # RFC 7638 thumbprint
    alg: Mapped[str] = mapped_column(String(10), default="ES256")
    public_jwk: Mapped[str] = mapped_column(Text)  # JSON
    private_key: Mapped[str] = mapped_column(Text)  # encrypted (keys.py), never in clear
    created_at: Mapped[datetime] = mapped_column(DateTime)
    retired_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    publish_until: Mapped[Optional[datetime]] = mapped_column(DateTime)


class Delegation(db.Model):
    __tablename__ = "delegations"
    __table_args__ = (UniqueConstraint("iss", "sub", "aud", name="uq_delegation_iss_sub_aud"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    iss: Mapped[str] = mapped_column(String(500))
    sub: Mapped[str] = mapped_column(String(255))
    aud: Mapped[str] = mapped_column(String(500))
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"), index=True)
    registration_id: Mapped[Optional[str]] = mapped_column(String(40), index=True)
    agent_platform: Mapped[Optional[str]] = mapped_column(String(200))
    agent_context_id: Mapped[Optional[str]] = mapped_column(String(255))
    first_seen: Mapped[datetime] = mapped_column(DateTime)
    last_seen: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime)

    user = relationship("User", lazy="joined")


class TrustedIssuer(db.Model):
    __tablename__ = "trusted_issuers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issuer: Mapped[str] = mapped_column(String(500), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    jwks_uri: Mapped[Optional[str]] = mapped_column(String(1000))
    algorithms: Mapped[str] = mapped_column(String(200), default="ES256 RS256 PS256 EdDSA")
    scopes: Mapped[Optional[str]] = mapped_column(Text)  # None = the post-claim set
    require_amr: Mapped[Optional[str]] = mapped_column(String(50))
    allowed_client_ids: Mapped[Optional[str]] = mapped_column(Text)  # space separated; None = any
    allow_private_jwks: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)


class SeenJti(db.Model):
    __tablename__ = "seen_jtis"
    iss: Mapped[str] = mapped_column(String(500), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class AuthDocVersion(db.Model):
    __tablename__ = "authdoc_versions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(Text)
    note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime)
    created_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id"))


class Setting(db.Model):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(Text)  # JSON


class AuditEvent(db.Model):
    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_event_created", "event", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    event: Mapped[str] = mapped_column(String(60))
    actor_kind: Mapped[str] = mapped_column(String(20))  # agent provider user admin system
    actor_id: Mapped[Optional[str]] = mapped_column(String(320))
    ip: Mapped[Optional[str]] = mapped_column(String(64))
    user_agent: Mapped[Optional[str]] = mapped_column(String(300))
    registration_id: Mapped[Optional[str]] = mapped_column(String(40), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(Integer, index=True)
    iss: Mapped[Optional[str]] = mapped_column(String(500), index=True)
    sub: Mapped[Optional[str]] = mapped_column(String(255))
    agent_platform: Mapped[Optional[str]] = mapped_column(String(200))
    agent_context_id: Mapped[Optional[str]] = mapped_column(String(255))
    data: Mapped[Optional[str]] = mapped_column(Text)  # JSON details, never secrets
    protocol: Mapped[Optional[str]] = mapped_column(String(10))  # v0.1 | latest, for agent and provider events


class OutboxMail(db.Model):
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    to_addr: Mapped[str] = mapped_column(String(320), index=True)
    subject: Mapped[str] = mapped_column(String(300))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[Optional[str]] = mapped_column(Text)


class LoginLink(db.Model):
    """One-time portal sign-in links (digest only)."""
    __tablename__ = "login_links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)
    used_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    next_path: Mapped[Optional[str]] = mapped_column(String(2000))  # where the link lands (a /claim page)


class LoginFailure(db.Model):
    """Failed console sign-ins, for the throttle per (IP, account): a stranger's failures never lock out
    the owner signing in from elsewhere."""
    __tablename__ = "login_failures"
    # the throttle counts one (email, ip) pair's recent rows; created_at alone serves the purge of old rows
    __table_args__ = (Index("ix_login_failures_email_ip_created", "email", "ip", "created_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    ip: Mapped[Optional[str]] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class ResourceServer(db.Model):
    """The team's own APIs that may introspect credentials (RFC 7662): each authenticates with its client_id
    and a secret, of which only the SHA-256 digest is kept."""
    __tablename__ = "resource_servers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    client_id: Mapped[str] = mapped_column(String(40), unique=True)  # the lookup index
    secret_digest: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime)
    secret_rotated_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
