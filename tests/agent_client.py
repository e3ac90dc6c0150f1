"""Test agent: a Python port of the official auth.md agent client's core (`@workos/auth.md-client`,
agent-clients/src/core/client.ts @ 34e100a1, discovery.ts @ a0b191f7, store.ts @ 85ef7b1c), so the
end-to-end tests drive authmd exactly as a real agent does.

Section marks (§17.n) are those of the latest-wire notes (spec/notes/latest-wire.md §17, "the official agent
client step by step"); each method says which step it ports. Deliberate differences from the TypeScript:
- the discovery cache belongs to the client instance (the official one is module-wide; one client per process
  is the usual case) and both it and the liveness checks read an injectable clock, so a test can move the
  agent's time forward (a token "expires" on the agent's side) without waiting;
- `requests` instead of fetch; a `session` may be passed in so a test can watch every request the agent sends.
"""
import copy
import json
import os
import re
import tempfile
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urlencode

import requests

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_ASSERTION_TYPE = "urn:ietf:params:oauth:token-type:id-jag"
METADATA_PATH = "/.well-known/oauth-authorization-server"
DISCOVERY_TTL = 5 * 60  # §17.2: metadata cached in memory for 5 minutes
EXPIRY_SLACK = 30  # §17.3: a stored expiry counts as passed 30 s early
CLAIM_INSTRUCTIONS = ("Ask the user to open the verification_uri and sign in. The page reveals a code; they read "
                      "it back, and you finish with complete_claim.")


class ProtocolError(Exception):
    """What the official client throws: a service error (code from the body's `error`) or one of its local
    codes (§17.10): no_pending_claim, claim_required, reauthentication_required, unsupported_identity_type,
    no_applicable_method, unexpected_response, no_identity, invalid_response, discovery_failed,
    agent_auth_unsupported, unknown_error."""

    def __init__(self, code: str, message: str, status: int, body=None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.status, self.body = code, message, status, body


def normalize_issuer(issuer: str) -> str:
    """§17.1: trailing slashes stripped; every piece of state is kept per normalised issuer."""
    return re.sub(r"/+$", "", issuer)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


# ---------------------------------------------------------------- stores (§17.9)

class MemoryStore:
    """A credential store in memory (the official client's CredentialStore interface: get/set/delete)."""

    def __init__(self):
        self.records: dict[str, dict] = {}

    def get(self, issuer: str):
        record = self.records.get(normalize_issuer(issuer))
        return copy.deepcopy(record)

    def set(self, issuer: str, record: dict) -> None:
        self.records[normalize_issuer(issuer)] = copy.deepcopy(record)

    def delete(self, issuer: str) -> None:
        self.records.pop(normalize_issuer(issuer), None)


class FileStore:
    """§17.9: the official FileCredentialStore: `{version:1, issuers:{<issuer>: record}}` in one JSON file,
    mode 0600 in a 0700 directory, written to a temporary file and renamed; read-modify-write cycles under an
    in-process lock and a cross-process lockfile `<file>.lock` created exclusively (retry every 50 ms, give up
    after 10 s, a lock older than 30 s is stale). The claim token and verification_uri never reach it."""

    LOCK_RETRY, LOCK_TIMEOUT, LOCK_STALE = 0.05, 10.0, 30.0

    def __init__(self, path: str):
        self.path = path
        self._mutex = threading.Lock()

    def _read(self) -> dict:
        try:
            with open(self.path) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return {"version": 1, "issuers": {}}

    def _write(self, data: dict) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(self.path) + ".", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=2)
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def _locked(self, op):
        lock_path = self.path + ".lock"
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        deadline = time.monotonic() + self.LOCK_TIMEOUT
        with self._mutex:
            while True:
                try:
                    fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                except FileExistsError:
                    try:
                        if time.time() - os.stat(lock_path).st_mtime > self.LOCK_STALE:
                            os.unlink(lock_path)
                            continue
                    except FileNotFoundError:
                        continue
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"Timed out waiting for credential store lock at {lock_path}")
                    time.sleep(self.LOCK_RETRY)  # another process holds the lock (as the official store polls)
                    continue
                own = os.fstat(fd).st_ino
                try:
                    return op()
                finally:
                    os.close(fd)
                    try:  # unlink only our own lock (a stale-lock breaker may have replaced it)
                        if os.stat(lock_path).st_ino == own:
                            os.unlink(lock_path)
                    except FileNotFoundError:
                        pass

    def get(self, issuer: str):
        return self._read()["issuers"].get(normalize_issuer(issuer))

    def set(self, issuer: str, record: dict) -> None:
        def op():
            data = self._read()
            data["issuers"][normalize_issuer(issuer)] = record
            self._write(data)
        self._locked(op)

    def delete(self, issuer: str) -> None:
        def op():
            data = self._read()
            data["issuers"].pop(normalize_issuer(issuer), None)
            self._write(data)
        self._locked(op)


# ---------------------------------------------------------------- the client

class AgentAuthClient:
    """The official AgentAuthClient: authenticate / complete_claim / start_claim_attempt / fetch_with_auth.

    Stored per issuer (§17.9): {registration_id, registration_type, claimed, identity{assertion, expires_at,
    refresh_token?{value, expires_at}}, access_token?{value, expires_at, scope, resource}}. Kept in memory
    only (`pending_claims`): the claim token, claim.url, verification_uri, the login email and the resource of
    a ceremony in flight, so a ceremony must finish in the client instance (process) that started it.
    """

    def __init__(self, store=None, *, session: requests.Session | None = None, clock=time.time, timeout=15):
        self.store = store if store is not None else MemoryStore()
        self.http = session or requests.Session()
        self.clock = clock
        self.timeout = timeout
        self.pending_claims: dict[str, dict] = {}
        self._metadata: dict[str, tuple[dict, float]] = {}

    # -------------------------------------------------------- §17.2 discovery

    def discover(self, issuer: str) -> dict:
        """§17.2: one GET of `{issuer}/.well-known/oauth-authorization-server` (no PRM, no 401 parsing, no
        Accept header of its own), cached 5 minutes. A non-2xx answer is `discovery_failed` (with the HTTP
        status); a document without `agent_auth.identity_endpoint` is `agent_auth_unsupported`."""
        base = normalize_issuer(issuer)
        cached = self._metadata.get(base)
        if cached is not None and self.clock() - cached[1] < DISCOVERY_TTL:
            return cached[0]
        url = base + METADATA_PATH
        res = self.http.get(url, timeout=self.timeout)
        if not res.ok:
            raise ProtocolError("discovery_failed", f"GET {url} returned {res.status_code}", res.status_code)
        try:
            metadata = res.json()
        except ValueError:
            raise ProtocolError("invalid_response", f"Non-JSON response (HTTP {res.status_code})",
                                res.status_code) from None
        agent_auth = metadata.get("agent_auth") if isinstance(metadata, dict) else None
        if not isinstance(agent_auth, dict) or not agent_auth.get("identity_endpoint"):
            raise ProtocolError("agent_auth_unsupported",
                                f"{base} does not advertise an agent_auth block; agentic registration is not "
                                "supported", 200)
        self._metadata[base] = (metadata, self.clock())
        return metadata

    # -------------------------------------------------------- §17.3 authenticate

    def authenticate(self, issuer: str, email: str | None = None, resource: str | None = None,
                     id_jag: str | None = None, force_reregister: bool = False) -> dict:
        """§17.3, in this order: (1) an email, no ID-JAG, a pending claim in memory and a stored record that is
        anonymous and unclaimed → start a claim attempt (the anonymous upgrade); (2) unless force_reregister,
        reuse what is stored (a live access token minted for the same resource; else exchange a live
        assertion; else refresh); (3) register. Returns {"status": "ready", ...} or
        {"status": "claim_required", "verification_uri", ...}."""
        base = normalize_issuer(issuer)
        if email and not id_jag and base in self.pending_claims:
            record = self.store.get(base)
            if record is not None and record.get("registration_type") == "anonymous" and not record.get("claimed"):
                return self.start_claim_attempt(base, email, resource)
        if not force_reregister:
            reused = self._try_reuse(base, resource)
            if reused is not None:
                return reused
        return self._register(base, email=email, resource=resource, id_jag=id_jag,
                              force_reregister=force_reregister)

    def _live(self, expires_at: str | None) -> bool:
        return bool(expires_at) and _epoch(expires_at) - EXPIRY_SLACK > self.clock()

    def _try_reuse(self, issuer: str, resource: str | None):
        """§17.3 step 2: the cheapest stored credential first. A refresh that fails (non-2xx, or no identity)
        falls through to registration; an exchange that fails is thrown."""
        record = self.store.get(issuer)
        if record is None:
            return None
        token = record.get("access_token")
        if token and self._live(token.get("expires_at")) and token.get("resource") == resource:
            return self._ready(record, token["value"], "Bearer",
                               max(0, int(_epoch(token["expires_at"]) - self.clock())), token.get("scope"))
        identity = record.get("identity")
        if identity and self._live(identity.get("expires_at")):
            return self._exchange(issuer, record, resource)
        refresh = (identity or {}).get("refresh_token")
        if refresh and self._live(refresh.get("expires_at")):
            refreshed = self._refresh(issuer, record, refresh["value"])
            if refreshed is not None:
                return self._exchange(issuer, refreshed, resource)
        return None

    def _refresh(self, issuer: str, record: dict, refresh_token: str):
        """§17.3 step 2.3: POST identity_endpoint {"type":"refresh","refresh_token"}; a 2xx with `identity`
        replaces the stored identity (best effort: the rotated token is one-shot); anything else → None."""
        metadata = self.discover(issuer)
        res = self._post_json(metadata["agent_auth"]["identity_endpoint"],
                              {"type": "refresh", "refresh_token": refresh_token})
        if not res.ok:
            return None
        body = _read_json(res)
        if not isinstance(body, dict) or not body.get("identity"):
            return None
        updated = {**record, "identity": body["identity"]}
        self._persist_best_effort(issuer, updated)
        return updated

    # -------------------------------------------------------- §17.4 registration

    def _register(self, issuer: str, *, email, resource, id_jag, force_reregister) -> dict:
        """§17.4: the re-authentication guard, the choice of type, the POST to identity_endpoint and what is
        done with each answer."""
        metadata = self.discover(issuer)
        agent_auth = metadata["agent_auth"]
        supported = agent_auth.get("identity_types_supported") or []
        # a user-bound registration whose credentials all expired must not quietly become anonymous
        if not email and not id_jag and not force_reregister:
            existing = self.store.get(issuer)
            if existing is not None and (existing.get("claimed") or existing.get("registration_type") != "anonymous"):
                hint = "ID-JAG" if existing.get("registration_type") == "identity_assertion" else "email"
                state = "claimed" if existing.get("claimed") else existing.get("registration_type")
                raise ProtocolError("reauthentication_required",
                                    f"Stored {state} credentials for {issuer} have expired. Re-authenticate with "
                                    f"the original {hint}, or pass force_reregister to start over anonymously.", 401)
        if id_jag:
            assertion_types = (agent_auth.get("identity_assertion") or {}).get("assertion_types_supported") or []
            if "identity_assertion" not in supported or ID_JAG_ASSERTION_TYPE not in assertion_types:
                raise ProtocolError("unsupported_identity_type",
                                    f"Service does not advertise identity_assertion with {ID_JAG_ASSERTION_TYPE} "
                                    f"(supported: [{', '.join(supported)}])", 400)
            body = {"type": "identity_assertion", "assertion_type": ID_JAG_ASSERTION_TYPE, "assertion": id_jag}
            registration_type = "identity_assertion"
        elif email and "service_auth" in supported:
            body, registration_type = {"type": "service_auth", "login_hint": email}, "service_auth"
        elif "anonymous" in supported:  # an email without service_auth advertised registers anonymously
            body, registration_type = {"type": "anonymous"}, "anonymous"
        else:
            raise ProtocolError("no_applicable_method",
                                f"No applicable registration method: service advertises [{', '.join(supported)}]; "
                                "provide an email for service_auth or an ID-JAG for identity_assertion", 400)
        res = self._post_json(agent_auth["identity_endpoint"], body)
        answer = _read_json(res)
        if res.status_code == 401 and isinstance(answer, dict) and answer.get("error") == "interaction_required":
            return self._stash_claim(issuer, answer, registration_type, email, resource)
        if not res.ok:
            raise _protocol_error(res.status_code, answer)
        if registration_type == "service_auth":
            return self._stash_claim(issuer, answer, registration_type, email, resource)
        if not isinstance(answer, dict) or not answer.get("identity"):
            raise ProtocolError("unexpected_response", "Registration response carried no identity block",
                                res.status_code)
        record = {"registration_id": answer.get("id"), "registration_type": registration_type,
                  "claimed": registration_type == "identity_assertion", "identity": answer["identity"]}
        self.store.set(issuer, record)
        claim = answer.get("claim")
        if registration_type == "anonymous" and claim:
            # kept in memory so that a later authenticate(email=...) can start the claim ceremony
            attempt = claim.get("attempt") or {}
            self.pending_claims[issuer] = {
                "registration_id": answer.get("id"), "registration_type": registration_type,
                "claim_token": claim.get("token"), "claim_url": claim.get("url"),
                "verification_uri": attempt.get("verification_uri", ""),
                "attempt_expires_at": attempt.get("expires_at") or claim.get("expires_at"),
                "email": None, "resource": resource}
        return self._exchange(issuer, record, resource)

    def _stash_claim(self, issuer, body, registration_type, email, resource) -> dict:
        """§17.4: a service_auth answer, or a 401 interaction_required, needs `claim.attempt`; the claim is
        kept in memory only and the caller gets claim_required with the verification_uri."""
        claim = body.get("claim") if isinstance(body, dict) else None
        if not isinstance(claim, dict) or not claim.get("attempt"):
            raise ProtocolError("unexpected_response",
                                "Claim-required registration response carried no claim.attempt block", 200)
        pending = {"registration_id": body.get("id"), "registration_type": registration_type,
                   "claim_token": claim.get("token"), "claim_url": claim.get("url"),
                   "verification_uri": claim["attempt"].get("verification_uri"),
                   "attempt_expires_at": claim["attempt"].get("expires_at"), "email": email, "resource": resource}
        self.pending_claims[issuer] = pending
        return self._claim_required(pending)

    @staticmethod
    def _claim_required(pending: dict) -> dict:
        return {"status": "claim_required", "registration_id": pending["registration_id"],
                "verification_uri": pending["verification_uri"],
                "attempt_expires_at": pending["attempt_expires_at"], "instructions": CLAIM_INSTRUCTIONS}

    # -------------------------------------------------------- §17.6 / §17.7 the claim

    def start_claim_attempt(self, issuer: str, email: str, resource: str | None = None) -> dict:
        """§17.6: POST to the registration answer's `claim.url` (not discovery's claim_endpoint)
        {"type":"service_auth","claim_token","login_hint"}; the new attempt's verification_uri replaces the
        old one in memory."""
        base = normalize_issuer(issuer)
        pending = self.pending_claims.get(base)
        if pending is None:
            raise ProtocolError("no_pending_claim",
                                f"No claimable registration in memory for {base}. Re-register with authenticate.", 400)
        res = self._post_json(pending["claim_url"], {"type": "service_auth", "claim_token": pending["claim_token"],
                                                     "login_hint": email})
        body = _read_json(res)
        if not res.ok:
            raise _protocol_error(res.status_code, body)
        pending["verification_uri"] = body["attempt"]["verification_uri"]
        pending["attempt_expires_at"] = body["attempt"]["expires_at"]
        pending["email"] = email
        if resource is not None:
            pending["resource"] = resource
        return self._claim_required(pending)

    def complete_claim(self, issuer: str, user_code: str, resource: str | None = None) -> dict:
        """§17.7: needs the pending claim (else no_pending_claim); discovers again; POST
        `{claim_endpoint}/complete` {"claim_token","user_code"}; no polling, no retry: every error (e.g.
        claim_not_confirmed, invalid_user_code) is thrown and the pending claim stays. On success the record
        becomes {registration_id, registration_type: the pending type, claimed: true, identity (with the refresh
        token)}, stored best effort, then exchanged with `resource` or the ceremony's resource."""
        base = normalize_issuer(issuer)
        pending = self.pending_claims.get(base)
        if pending is None:
            raise ProtocolError("no_pending_claim", f"No claim ceremony in flight for {base}. Call authenticate first.",
                                400)
        metadata = self.discover(base)
        res = self._post_json(metadata["agent_auth"]["claim_endpoint"] + "/complete",
                              {"claim_token": pending["claim_token"], "user_code": user_code})
        body = _read_json(res)
        if not res.ok:
            raise _protocol_error(res.status_code, body)
        self.pending_claims.pop(base, None)
        record = {"registration_id": body.get("id"), "registration_type": pending["registration_type"],
                  "claimed": True, "identity": body.get("identity")}
        self._persist_best_effort(base, record)
        return self._exchange(base, record, resource if resource is not None else pending.get("resource"))

    # -------------------------------------------------------- §17.5 exchange

    def _exchange(self, issuer: str, record: dict, resource: str | None) -> dict:
        """§17.5: RFC 7523 jwt-bearer at token_endpoint, form-encoded (grant_type, assertion, resource when
        given); non-JSON → invalid_response, non-2xx → the service's error; the access token is stored with
        expires_at = now + expires_in, its scope and the resource it was minted for."""
        if not record.get("identity"):
            raise ProtocolError("no_identity", "No identity assertion on record to exchange", 400)
        metadata = self.discover(issuer)
        params = {"grant_type": JWT_BEARER_GRANT, "assertion": record["identity"]["assertion"]}
        if resource:
            params["resource"] = resource
        res = self.http.post(metadata["token_endpoint"], data=urlencode(params),
                             headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=self.timeout)
        body = _read_json(res)
        if not res.ok:
            raise _protocol_error(res.status_code, body)
        updated = {**record, "access_token": {"value": body["access_token"],
                                              "expires_at": _iso(self.clock() + body["expires_in"]),
                                              "scope": body.get("scope"), "resource": resource}}
        self._persist_best_effort(issuer, updated)
        return self._ready(updated, body["access_token"], body.get("token_type"), body["expires_in"], body.get("scope"))

    @staticmethod
    def _ready(record: dict, access_token: str, token_type, expires_in, scope) -> dict:
        return {"status": "ready", "access_token": access_token, "token_type": token_type, "expires_in": expires_in,
                "scope": scope, "registration_id": record.get("registration_id"),
                "registration_type": record.get("registration_type"), "claimed": record.get("claimed")}

    # -------------------------------------------------------- §17.8 fetch_with_auth

    def fetch_with_auth(self, issuer: str, url: str, method: str = "GET", headers: dict | None = None,
                        body=None, resource: str | None = None) -> dict:
        """§17.8: authenticate (anything but ready is claim_required), call with the bearer token; on a 401,
        drop the cached access token and re-authenticate once (which exchanges the stored assertion again),
        then retry. Returns {"status", "headers", "body"}."""
        base = normalize_issuer(issuer)
        auth = self.authenticate(base, resource=resource)
        if auth["status"] != "ready":
            raise ProtocolError("claim_required", "A claim ceremony is required before calling the API. Hand the "
                                f"user: {auth['verification_uri']}", 401)

        def call(token):
            return self.http.request(method, url, headers={**(headers or {}), "Authorization": f"Bearer {token}"},
                                     data=body, timeout=self.timeout)

        res = call(auth["access_token"])
        if res.status_code == 401:
            record = self.store.get(base)
            if record is not None and record.get("access_token"):
                self.store.set(base, {k: v for k, v in record.items() if k != "access_token"})
                retried = self.authenticate(base, resource=resource)
                if retried["status"] == "ready":
                    res = call(retried["access_token"])
        return {"status": res.status_code, "headers": {k.lower(): v for k, v in res.headers.items()},
                "body": res.text}

    # -------------------------------------------------------- plumbing

    def _post_json(self, url: str, body: dict) -> requests.Response:
        return self.http.post(url, data=json.dumps(body), headers={"Content-Type": "application/json"},
                              timeout=self.timeout)

    def _persist_best_effort(self, issuer: str, record: dict) -> None:
        """One-shot credentials (a rotated refresh token, a post-claim assertion) are returned even if the
        store cannot be written (client.ts persistBestEffort)."""
        try:
            self.store.set(issuer, record)
        except Exception as exc:  # noqa: BLE001 - as the official client: log and carry on
            print(f"authmd: failed to persist credentials for {issuer}: {exc}")


def _read_json(res: requests.Response):
    """client.ts readJson: the body as JSON, else invalid_response naming the HTTP status."""
    try:
        return json.loads(res.text)
    except ValueError:
        snippet = f": {res.text[:200]}" if res.text else ""
        raise ProtocolError("invalid_response", f"Non-JSON response (HTTP {res.status_code}){snippet}",
                            res.status_code) from None


def _protocol_error(status: int, body) -> ProtocolError:
    """client.ts protocolError: code from `error` (else unknown_error), message from `message`, else
    `error_description`, else "HTTP <status>"; the whole body is kept (e.g. login_required's max_age)."""
    parsed = body if isinstance(body, dict) else {}
    return ProtocolError(parsed.get("error") or "unknown_error",
                         parsed.get("message") or parsed.get("error_description") or f"HTTP {status}", status, body)
