"""Trust room (CLI): `flask issuers add|list|disable|enable|remove` to manage trusted providers."""
import click
from flask.cli import AppGroup

from ..extensions import db
from . import issuers
from .jwks import jwks_uri_of

# the option that set each field, to name it in an error
OPTIONS = {"issuer": "ISSUER", "name": "--name", "jwks_uri": "--jwks-uri", "algorithms": "--algorithm",
           "scopes": "--scope", "require_amr": "--require-amr", "allowed_client_ids": "--client-id"}


def _fail(exc: issuers.IssuerError):
    raise click.ClickException("\n".join(f"{OPTIONS.get(f, f)}: {m}" for f, m in exc.errors.items())) from None


def register(app):
    group = AppGroup("issuers", help="Manage the identity providers whose ID-JAGs this service trusts.")

    @group.command("add")
    @click.argument("issuer")
    @click.option("--jwks-uri", default=None, help="Pinned JWKS URL (default: ISSUER/.well-known/jwks.json).")
    @click.option("--name", default="", help="Display name, e.g. 'OpenAI'.")
    @click.option("--scope", "scopes", multiple=True, help="A scope to grant (repeat; default: the post-claim set).")
    @click.option("--require-amr", default=None, help="An amr value the ID-JAG must carry, e.g. mfa.")
    @click.option("--client-id", "client_ids", multiple=True, help="An allowed client_id (repeat; default: any).")
    @click.option("--algorithm", "algorithms", multiple=True,
                  help=f"An allowed signing algorithm (repeat; default: {' '.join(issuers.DEFAULT_ALGORITHMS)}).")
    @click.option("--allow-private-jwks", is_flag=True, default=False,
                  help="Allow a JWKS URL on a private or link-local address (SSRF guard off for this issuer).")
    @click.option("--disabled", is_flag=True, default=False, help="Add it switched off.")
    def add(issuer, jwks_uri, name, scopes, require_amr, client_ids, algorithms, allow_private_jwks, disabled):
        """Trust ISSUER (its exact iss value; https, or http on a loopback host)."""
        try:
            row = issuers.add(issuer, jwks_uri=jwks_uri, name=name, scopes=scopes, require_amr=require_amr,
                              allowed_client_ids=client_ids, algorithms=algorithms,
                              allow_private_jwks=allow_private_jwks, enabled=not disabled, actor="cli")
        except issuers.IssuerError as exc:
            _fail(exc)
        db.session.commit()
        click.echo(f"trusted {row.issuer} (JWKS {jwks_uri_of(row)})")

    @group.command("list")
    def list_():
        """List trusted issuers: issuer, state, JWKS, algorithms, scopes, policy."""
        rows = issuers.list_all()
        if not rows:
            click.echo("no trusted issuers")
        for r in rows:
            policy = []
            if r.require_amr:
                policy.append(f"amr={r.require_amr}")
            if r.allowed_client_ids:
                policy.append(f"client_id={','.join(r.allowed_client_ids.split())}")
            if r.allow_private_jwks:
                policy.append("private-jwks")
            click.echo("\t".join([r.issuer, "enabled" if r.enabled else "disabled", jwks_uri_of(r),
                                  r.algorithms, r.scopes or "(post-claim scopes)", " ".join(policy) or "-",
                                  r.name or ""]))

    def _toggle(issuer, enabled):
        try:
            issuers.set_enabled(issuer, enabled, actor="cli")
        except issuers.IssuerError as exc:
            _fail(exc)
        db.session.commit()
        click.echo(f"{'enabled' if enabled else 'disabled'} {issuer}")

    @group.command("disable")
    @click.argument("issuer")
    def disable(issuer):
        """Stop accepting new ID-JAGs from ISSUER (its logout tokens are still honoured)."""
        _toggle(issuer, False)

    @group.command("enable")
    @click.argument("issuer")
    def enable(issuer):
        """Accept ID-JAGs from ISSUER again."""
        _toggle(issuer, True)

    @group.command("remove")
    @click.argument("issuer")
    def remove(issuer):
        """Remove ISSUER from the trust list (credentials it vouched for stay until revoked or expired)."""
        try:
            issuers.remove(issuer, actor="cli")
        except issuers.IssuerError as exc:
            _fail(exc)
        db.session.commit()
        click.echo(f"removed {issuer}")

    app.cli.add_command(group)
