"""Trust room: trusted issuers (issuers), their keys (jwks) and the checks of the tokens they sign
(verify); the `flask issuers` commands (cli). Import from the submodule that owns a thing."""
