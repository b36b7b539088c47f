"""What both web apps enforce: access token, Host / Origin checks, CSRF tokens, ids in range, files under home.

The security model (README, "Security"): the pages bind to loopback by
default, where the Host check stops DNS-rebinding pages from reading them.
Binding beyond loopback requires an access token (``web.token`` or
``--token``; one is generated and printed when unset), sent as a bearer header
or set as an HttpOnly, SameSite=Strict cookie by the login page. Every
state-changing request must come from the app's own origin (Origin, else
Referer, must match Host) and carry the per-session CSRF token the app put in
its form. Files are served only from under promptloop's home.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse, RedirectResponse, Response

SESSION_COOKIE = "promptloop_session"
TOKEN_COOKIE = "promptloop_token"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_ID = 2**63 - 1  # the largest id SQLite and PostgreSQL store; a larger one cannot name a row

LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>promptloop: sign in</title></head>
<body><form method="post" action="/login"><label>Access token <input name="token" type="password" autofocus
required></label> <button>Sign in</button></form></body></html>"""


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def row_id(value: int) -> int:
    """A path id that can name a row; anything else is 'not found', never a database overflow (HTTP 500)."""
    if not 0 < value <= MAX_ID:
        raise HTTPException(404, f"no row with id {value}")
    return value


def serve_file_under(home: Path, path: str | None, what: str, media_type: str) -> FileResponse:
    """``path`` as a response only when it is a regular file inside ``home`` (symlinks resolved first)."""
    if not path:
        raise HTTPException(404, f"no file for {what}")
    resolved = Path(path).resolve()
    if not resolved.is_relative_to(Path(home).resolve()) or not resolved.is_file():
        raise HTTPException(404, f"{what} is not a file under promptloop's home")
    return FileResponse(resolved, media_type=media_type)


class WebGuard:
    """The checks of one app instance; ``token=None`` on loopback means no login (one local user)."""

    def __init__(self, *, token: str | None, bound_host: str):
        self.token = token
        self.loopback_only = is_loopback(bound_host)
        self._secret = secrets.token_bytes(32)  # per process: a restart invalidates old forms, nothing else

    def csrf_token(self, request: Request) -> str:
        session = request.cookies.get(SESSION_COOKIE) or request.state.new_session
        return hmac.new(self._secret, session.encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, request: Request, submitted: str | None) -> None:
        session = request.cookies.get(SESSION_COOKIE)
        if not session or not submitted or not hmac.compare_digest(submitted, self.csrf_token(request)):
            raise HTTPException(403, "missing or stale form token; reload the page and submit again")

    def _authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        offered = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(TOKEN_COOKIE, "")
        return hmac.compare_digest(offered.encode(), self.token.encode())

    def _same_origin(self, request: Request) -> bool:
        host = request.headers.get("host", "")
        source = request.headers.get("origin") or request.headers.get("referer")
        if source is None:
            return True  # not a browser form (curl, scripts): the CSRF token still decides
        return urlsplit(source).netloc == host and source != "null"

    def install(self, app: FastAPI) -> None:
        guard = self

        @app.middleware("http")
        async def checks(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
            try:
                host = urlsplit("//" + request.headers.get("host", "")).hostname or ""
            except ValueError:
                host = ""
            if guard.loopback_only and not is_loopback(host):
                return PlainTextResponse("this server answers on loopback only (Host header refused)", 421)
            if request.method not in SAFE_METHODS and not guard._same_origin(request):
                return PlainTextResponse("cross-origin request refused", 403)
            if request.url.path != "/login" and not guard._authorised(request):
                if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                    return RedirectResponse("/login", status_code=303)
                return PlainTextResponse("access token required (Authorization: Bearer ... or /login)", 401,
                                         headers={"WWW-Authenticate": "Bearer"})
            request.state.new_session = secrets.token_urlsafe(24)
            response: Response = await call_next(request)
            if SESSION_COOKIE not in request.cookies:
                response.set_cookie(SESSION_COOKIE, request.state.new_session, httponly=True, samesite="strict")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("X-Frame-Options", "DENY")
            return response

        @app.get("/login", response_class=HTMLResponse)
        def login_page() -> HTMLResponse:
            return HTMLResponse(LOGIN_PAGE)

        @app.post("/login")
        async def login(request: Request) -> Response:
            form = await form_fields(request)
            if guard.token is None or not hmac.compare_digest(form.get("token", "").encode(), guard.token.encode()):
                return PlainTextResponse("wrong access token", 401)
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(TOKEN_COOKIE, guard.token, httponly=True, samesite="strict")
            return response


async def form_fields(request: Request) -> dict[str, str]:
    """An url-encoded form's last value per field; another content type is 415, bytes that are not UTF-8 400."""
    from urllib.parse import parse_qs

    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
    try:
        body = (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, "the form is not UTF-8") from exc
    try:
        fields = parse_qs(body, keep_blank_values=True, strict_parsing=False, errors="strict")
    except UnicodeDecodeError as exc:  # percent-escapes that decode to invalid UTF-8
        raise HTTPException(400, "the form is not UTF-8") from exc
    return {k: v[-1] for k, v in fields.items()}


def resolve_token(configured: str | None, host: str) -> tuple[str | None, str | None]:
    """(token the app requires, warning to print): beyond loopback a token is required, generated when unset."""
    if configured:
        return configured, None
    if is_loopback(host):
        return None, None
    token = secrets.token_urlsafe(18)
    return token, (f"serving on {host}, beyond loopback, and no access token was set (--token or "
                   f"PROMPTLOOP_WEB__TOKEN): generated one for this run: {token}  "
                   "(open /login, or send 'Authorization: Bearer <token>')")
