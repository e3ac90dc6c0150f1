"""Wire names room: the protocol's fixed identifiers, in one place for every room that speaks them."""
ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"  # the assertion_type naming a provider's ID-JAG
REVOKED_EVENT = "https://schemas.workos.com/events/agent/auth/identity/assertion/revoked"
