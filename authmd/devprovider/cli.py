"""Development provider room (CLI): mint ID-JAGs and logout tokens to try the agent-verified flow with curl."""
import click
from flask import current_app
from flask.cli import AppGroup

OFF = ("The development provider is off. Start with AUTHMD_DEV_PROVIDER=1 (never in production), "
       "then run `flask --app app init-db` once so it is trusted.")


def _require_on():
    if not current_app.config.get("DEV_PROVIDER"):
        raise click.ClickException(OFF)


def register(app):
    group = AppGroup("dev-provider", help="The development identity provider (only with AUTHMD_DEV_PROVIDER=1).")

    @group.command("id-jag")
    @click.option("--email", required=True, help="The user's (verified) email address.")
    @click.option("--sub", default=None, help="The provider's subject id for the user (default: the email).")
    @click.option("--aud", default=None, help="The audience (default: this service's ISSUER).")
    def id_jag(email, sub, aud):
        """Print a signed ID-JAG (valid 5 minutes, usable once) for POST /agent/auth."""
        _require_on()
        from . import mint_id_jag
        click.echo(mint_id_jag(email, sub=sub, aud=aud))

    @group.command("logout-token")
    @click.option("--sub", required=True, help="The subject whose credentials to revoke (the id-jag's sub).")
    @click.option("--aud", default=None, help="The audience (default: this service's ISSUER).")
    def logout_token(sub, aud):
        """Print a signed logout token for POST /agent/auth/revoke."""
        _require_on()
        from . import mint_logout_token
        click.echo(mint_logout_token(sub, aud=aud))

    app.cli.add_command(group)
