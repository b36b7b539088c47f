"""The rating page (LiFT's human feedback): one video at a time, a score and a rationale per dimension.

A small server-rendered app for one rater on loopback. It shows the next
video the rater has not rated on every dimension, with the user's prompt and
the text the video model rendered, and records the form through the same
validation as `ratings import` (scale, required rationale), so a rating from
the page and one from a file are the same row. Keyboard: 1-5 picks the score
of the focused dimension, Tab moves on, Ctrl+Enter (or Enter on the button)
saves; the header shows rated / remaining.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine

from promptloop.config import Settings
from promptloop.store.ratings import rating_queue, save_ratings, validate, video_context
from promptloop.ui.security import WebGuard, form_fields, row_id, serve_file_under

TEMPLATES = Path(__file__).parent / "templates"


def create_rating_app(engine: Engine, settings: Settings, *, rater: str, token: str | None = None,
                      host: str = "127.0.0.1") -> FastAPI:
    app = FastAPI(title="promptloop ratings", docs_url=None, redoc_url=None)
    guard = WebGuard(token=token, bound_host=host)
    guard.install(app)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    cfg = settings.ratings
    dims = list(cfg.dimensions)

    def progress() -> dict:
        queue, total = rating_queue(engine, rater, dims)
        return {"rater": rater, "total": total, "remaining": len(queue), "rated": total - len(queue),
                "next": queue[0] if queue else None}

    def render(request: Request, video_id: int | None, *, errors: list[str] | None = None, values: dict | None = None,
               status: int = 200) -> HTMLResponse:
        p = progress()
        ctx = video_context(engine, video_id) if video_id is not None else None
        return templates.TemplateResponse(request, "rate.html", {
            "p": p, "video": ctx, "dims": cfg.dimensions, "cfg": cfg, "errors": errors or [],
            "values": values or {}, "csrf": guard.csrf_token(request), "scale": list(range(int(cfg.scale_min), int(cfg.scale_max) + 1))},
            status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def next_video(request: Request) -> HTMLResponse:
        return render(request, progress()["next"])

    @app.get("/api/progress")
    def api_progress() -> JSONResponse:
        return JSONResponse(progress())

    @app.get("/videos/{video_id}")
    def video_file(video_id: int) -> FileResponse:
        ctx = video_context(engine, row_id(video_id))
        return serve_file_under(settings.home, ctx and ctx["path"], f"video {video_id}", "video/mp4")

    @app.post("/rate/{video_id}")
    async def rate(video_id: int, request: Request):
        form = await form_fields(request)
        guard.check_csrf(request, form.get("csrf"))
        if video_context(engine, row_id(video_id)) is None:
            raise HTTPException(404, f"no video {video_id}")
        records = [(i + 1, {"video_id": video_id, "rater": rater, "dimension": d, "score": form.get(f"score_{d}"),
                            "rationale": form.get(f"rationale_{d}", "")}) for i, d in enumerate(dims)]
        from sqlmodel import Session

        with Session(engine) as s:
            rows, errors = validate(s, records, cfg)
        if errors:
            msgs = [f"{dims[e.line - 1]}: {e.message}" for e in errors]
            return render(request, video_id, errors=msgs, values=form, status=400)
        save_ratings(engine, rows, cfg)
        return RedirectResponse("/", status_code=303)

    return app


def serve(engine: Engine, settings: Settings, *, rater: str, host: str = "127.0.0.1", port: int = 8502,
          token: str | None = None) -> None:
    import uvicorn

    uvicorn.run(create_rating_app(engine, settings, rater=rater, token=token, host=host), host=host, port=port,
                log_level="warning")
