"""Console forms room: every Flask-WTF form of the console and the portal (CSRF comes with FlaskForm)."""
from urllib.parse import urlparse

from flask_wtf import FlaskForm
from wtforms import (BooleanField, EmailField, IntegerField, PasswordField,
                     StringField, TextAreaField, URLField)
from wtforms import SelectField
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional, ValidationError

from ..trust.issuers import DEFAULT_ALGORITHMS, SUPPORTED_ALGORITHMS
from ..scopes import NAME_RE as SCOPE_RE
from .formatting import duration

LOOPBACK = ("localhost", "127.0.0.1", "[::1]", "::1")
MIN_PASSWORD = 10  # admins' passwords, from the setup page and from `flask create-admin`


def _email(form, field):
    from ..users import normalize_email
    from ..util import ProtocolError
    try:
        field.data = normalize_email((field.data or "").strip())
    except ProtocolError:
        raise ValidationError("Enter a valid email address, like ada@example.com.") from None


def https_or_loopback(form, field):
    value = (field.data or "").strip()
    if not value:
        return
    url = urlparse(value)
    if url.scheme not in ("https", "http") or not url.hostname:
        raise ValidationError("Enter an absolute URL starting with https://.")
    if url.scheme == "http" and url.hostname not in LOOPBACK and f"[{url.hostname}]" not in LOOPBACK:
        raise ValidationError("Use https:// (plain http is allowed only for localhost, 127.0.0.1 and [::1]).")
    if url.fragment or url.query:
        raise ValidationError("The URL must not carry a query or a fragment.")
    field.data = value


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired("Enter your email."), _email],
                       render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[DataRequired("Enter your password."), Length(max=1000)],
                             render_kw={"autocomplete": "current-password"})


class SetupForm(FlaskForm):
    """The first admin, created from the one-time setup link (same password rule as `flask create-admin`)."""
    email = EmailField("Email", validators=[DataRequired("Enter your email."), _email],
                       render_kw={"autocomplete": "username"})
    password = PasswordField("Password", validators=[
        DataRequired("Choose a password."),
        Length(min=MIN_PASSWORD, max=1000, message=f"Use between {MIN_PASSWORD} and 1000 characters.")],
        description=f"At least {MIN_PASSWORD} characters; a few unrelated words make a strong one.",
        render_kw={"autocomplete": "new-password"})
    confirm = PasswordField("Repeat the password", validators=[
        DataRequired("Type the password again."), EqualTo("password", "The two passwords differ.")],
        render_kw={"autocomplete": "new-password"})

    def validate_password(self, field):
        if self.email.data and field.data and field.data.strip().lower() == str(self.email.data).lower():
            raise ValidationError("The password cannot be your email address.")


class PortalLoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired("Enter your email."), _email],
                       render_kw={"autocomplete": "email"})


class ButtonForm(FlaskForm):
    """A form that is only a CSRF token and a button (sign out, enable, confirmations)."""


class IssuerForm(FlaskForm):
    """Only parses: the trust room's issuers.add / update check every value and name the field at fault."""
    issuer = URLField("Issuer URL", validators=[DataRequired("Enter the issuer URL (the iss of its tokens).")],
                      description="Exactly the iss value of the provider's tokens, e.g. https://auth.openai.com.")
    name = StringField("Display name")
    jwks_uri = URLField("JWKS URL", description="Leave empty for <issuer>/.well-known/jwks.json.")
    algorithms = StringField("Allowed algorithms", default=" ".join(DEFAULT_ALGORITHMS),
                             validators=[DataRequired("Name at least one algorithm.")],
                             description="Space separated, from: " + " ".join(SUPPORTED_ALGORITHMS) + ".")
    scopes = StringField("Scopes granted", description="Space separated; empty grants the post-claim scopes.")
    require_amr = StringField("Required amr value", description="For example mfa; empty requires nothing.")
    allowed_client_ids = StringField("Allowed client ids", description="Space separated; empty allows any client.")
    allow_private_jwks = BooleanField("Allow a JWKS URL on a private network address")
    enabled = BooleanField("Enabled", default=True)


class ScopeForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Enter a scope name."), Length(max=100)],
                       description="Letters, digits and . _ : - , e.g. invoices.read")
    description = StringField("Description", validators=[Optional(), Length(max=500)])
    position = IntegerField("Order", default=0, validators=[Optional(), NumberRange(min=0, max=100000)])
    pre_claim = BooleanField("Granted before a claim (pre-claim)")
    post_claim = BooleanField("Granted after a claim (post-claim)", default=True)
    enabled = BooleanField("Enabled", default=True)

    def validate_name(self, field):
        field.data = (field.data or "").strip()
        if not SCOPE_RE.fullmatch(field.data):
            raise ValidationError("Use 1-100 letters, digits and . _ : - only.")


class AuthDocForm(FlaskForm):
    body = TextAreaField("auth.md template", validators=[DataRequired("The document cannot be empty."),
                                                         Length(max=200_000)])
    note = StringField("Note for the history", validators=[Optional(), Length(max=500)],
                       description="What changed and why (shown in the history).")


def _lifetime(label: str, most: int) -> IntegerField:
    """A lifetime in seconds, from one minute to `most`, its range said in words too."""
    allowed = f"Between 60 (1 minute) and {most} ({duration(most)})."
    return IntegerField(label, description=f"Allowed: {allowed[0].lower()}{allowed[1:]}", validators=[
        DataRequired("Enter a number of seconds."), NumberRange(60, most, allowed)])


class SettingsForm(FlaskForm):
    service_name = StringField("Service name", validators=[DataRequired("Enter a name."), Length(max=100)])
    logo_uri = URLField("Logo URL", validators=[Optional(), Length(max=1000), https_or_loopback])
    anonymous_enabled = BooleanField("Anonymous start")
    verified_email_enabled = BooleanField("Email required (verified_email; service_auth in the latest protocol)")
    id_jag_enabled = BooleanField("Agent verified (ID-JAG)")
    registration_ttl = _lifetime("Claim deadline (seconds)", 30 * 86400)
    claim_link_ttl = _lifetime("Claim link lifetime (seconds)", 86400)
    otp_ttl = _lifetime("Code lifetime (seconds)", 3600)
    access_token_ttl = _lifetime("Access token lifetime (seconds)", 86400)
    otp_max_per_attempt = IntegerField("Codes per claim attempt", validators=[
        DataRequired("Enter a number."), NumberRange(1, 20, "Between 1 and 20.")])
    otp_max_failures_per_attempt = IntegerField("Wrong codes per attempt", validators=[
        DataRequired("Enter a number."), NumberRange(1, 20, "Between 1 and 20.")])
    otp_max_failures_per_registration = IntegerField("Wrong codes per registration before lock", validators=[
        DataRequired("Enter a number."), NumberRange(1, 100, "Between 1 and 100.")])
    existing_users_only = BooleanField(
        "Existing users only: never create a user",
        description="Agents are bound only to people who already have an account here: a claim or an email "
                    "registration for another address, or an ID-JAG for an unknown person, is refused "
                    "(user_not_provisioned) before any mail goes out, and the portal mails sign-in links "
                    "only to existing users.")

    # --- the latest protocol (/agent/identity, /oauth2/token): its fields, LATEST_LIFETIMES and LATEST_KEYS here
    assertion_ttl = _lifetime("Identity assertion lifetime (seconds)", 86400)
    refresh_token_ttl = _lifetime("Refresh token lifetime (seconds; each use starts it afresh)", 365 * 86400)
    user_code_ttl = _lifetime("Claim page code lifetime (seconds)", 3600)
    id_jag_max_auth_age = _lifetime("How recent a provider sign-in must be (ID-JAG auth_time, seconds)", 86400)
    link_identities_by_email = BooleanField(
        "Link a provider identity to an existing account by verified email without asking the account's owner",
        description="Risky, off by default: anyone controlling a provider account that asserts someone's email "
                    "gets that person's agent access. While it is off, the account's owner first confirms the "
                    "link, signed in, on the claim page (the agent is answered interaction_required meanwhile); "
                    "turning it on restores v0.1's silent link.")
    LATEST_LIFETIMES = ("assertion_ttl", "refresh_token_ttl", "user_code_ttl", "id_jag_max_auth_age")
    LATEST_KEYS = LATEST_LIFETIMES + ("link_identities_by_email",)
    # --- end of the latest protocol's block

    KEYS = ("service_name", "logo_uri", "anonymous_enabled", "verified_email_enabled", "id_jag_enabled",
            "registration_ttl", "claim_link_ttl", "otp_ttl", "access_token_ttl", "otp_max_per_attempt",
            "otp_max_failures_per_attempt", "otp_max_failures_per_registration", "existing_users_only") + LATEST_KEYS

    LIFETIMES = ("registration_ttl", "claim_link_ttl", "otp_ttl", "access_token_ttl") + LATEST_LIFETIMES

    # --- the latest protocol's access token format (one block; its keys join KEYS and LIFETIMES here)
    access_token_format = SelectField(
        "Access token format (latest protocol)", default="opaque",
        choices=[("opaque", "Opaque (at_…): every check asks authmd"),
                 ("jwt", "JWT (RFC 9068, at+jwt): your APIs may verify it themselves")],
        description="A JWT access token cannot be recalled before it expires: revoked here, it is refused at "
                    "once by authmd's own API, introspection and forward auth, but an API that verifies it on "
                    "its own (the authmd_resource helper does) keeps accepting it until its lifetime below "
                    "ends. Keep that lifetime short.")
    jwt_access_token_ttl = IntegerField(
        "JWT access token lifetime (seconds)", default=300,
        description="Allowed: between 60 (1 minute) and 3600 (1 hour); 300 (5 minutes) by default. Opaque "
                    "tokens keep the access token lifetime above.",
        validators=[DataRequired("Enter a number of seconds."),
                    NumberRange(60, 3600, "Between 60 (1 minute) and 3600 (1 hour).")])
    KEYS = KEYS + ("access_token_format", "jwt_access_token_ttl")
    LIFETIMES = LIFETIMES + ("jwt_access_token_ttl",)

    def describe_lifetimes(self, current: dict) -> None:
        """Each lifetime's hint says the saved value in minutes, hours or days."""
        for key in self.LIFETIMES:
            field = getattr(self, key)
            field.description = f"Now {current[key]} seconds = {duration(current[key])}. {field.description}"

    def values(self) -> dict:
        out = {k: getattr(self, k).data for k in self.KEYS}
        out["logo_uri"] = out["logo_uri"] or ""
        out["service_name"] = out["service_name"].strip()
        return out
