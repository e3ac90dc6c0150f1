"""authmd_resource for Starlette and FastAPI: a dependency that answers with the caller's Identity.

    authmd = Authmd(app, issuer="https://auth.example.com", client_id="rs_…", client_secret=SECRET)

    @app.get("/v1/things")
    async def things(caller: Identity = Depends(authmd.require("api.read"))):
        return {"caller": caller.sub}

In plain Starlette, await the dependency in the endpoint: ``caller = await authmd.require("api.read")(request)``.
Authmd(app) (or authmd.install(app)) serves /.well-known/oauth-protected-resource and turns a refusal into
authmd's 401/403 answer. The introspection call and a fetch of authmd's keys are blocking (urllib), so they
run in the thread pool; a cached answer, and a JWT whose key is known, do not leave the event loop.
"""
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from . import MISS, Client, Denied, Identity, Unavailable, check_scopes


def _base_url(request: Request) -> str:
    return str(request.base_url)


async def _answer(request: Request, exc) -> Response:
    return Response(exc.body, status_code=exc.status, headers=dict(exc.headers))


class Authmd:
    def __init__(self, app=None, *, client: Client | None = None, **settings):
        self.client = client or Client(**settings)
        if app is not None:
            self.install(app)

    def install(self, app) -> None:
        for path in self.client.metadata_paths():
            app.add_route(path, self._metadata, methods=["GET"], include_in_schema=False)
        app.add_exception_handler(Denied, _answer)
        app.add_exception_handler(Unavailable, _answer)

    async def _metadata(self, request: Request) -> Response:
        return Response(self.client.metadata_body(_base_url(request)), media_type="application/json",
                        headers={"Cache-Control": "public, max-age=300"})

    def require(self, *scopes: str):
        """A dependency: the caller's Identity for a live credential holding every scope named, else
        Denied (answered 401/403 by the installed handler)."""
        needed = check_scopes(scopes)
        client = self.client

        async def dependency(request: Request) -> Identity:
            base = _base_url(request)
            token = client.token_from(request.headers.get("authorization"), base)
            answer = client.ready(token, base)
            if answer is MISS:
                answer = await run_in_threadpool(client.check, token, base)
            identity = client.decide(answer, needed, base)
            request.state.authmd_identity = identity
            return identity
        return dependency
