"""The trace viewer's web app (FastAPI, server-rendered Jinja2 pages, no JavaScript build).

Read-only: every route is a GET over the store. It binds to loopback by
default because traces hold user prompts; ``--host 0.0.0.0`` is the
deliberate choice of whoever serves it to a team. Videos are served only from
paths inside promptloop's home, so a crafted row cannot expose other files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates
from sqlalchemy.engine import Engine
from sqlmodel import Session

from promptloop.config import Settings
from promptloop.errors import PromptloopError
from promptloop.store.models import Video
from promptloop.ui import queries
from promptloop.ui.security import MAX_ID, WebGuard, row_id, serve_file_under

TEMPLATES = Path(__file__).parent / "templates"


def create_app(engine: Engine, settings: Settings, *, token: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    app = FastAPI(title="promptloop traces", docs_url=None, redoc_url=None)
    WebGuard(token=token, bound_host=host).install(app)
    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters["num"] = lambda v, nd=3: "-" if v is None else (f"{v:.{nd}f}" if isinstance(v, float)
                                                                          else str(v))

    def page(request: Request, name: str, **ctx: Any) -> HTMLResponse:
        return templates.TemplateResponse(request, name, {"nav": name.split(".")[0], **ctx})

    def opt_int(value: str | None, name: str) -> int | None:
        if value in (None, ""):
            return None
        try:
            number = int(value)
        except ValueError as exc:
            raise HTTPException(400, f"{name} must be an integer, got {value!r}") from exc
        if abs(number) > MAX_ID:
            raise HTTPException(400, f"{name} is out of range")
        return number

    @app.get("/", response_class=HTMLResponse)
    def runs_page(request: Request, graph: str | None = None, round: str | None = None) -> HTMLResponse:  # noqa: A002
        r = opt_int(round, "round")
        return page(request, "runs.html", runs=queries.runs(engine, graph=graph or None, round_index=r),
                    graphs=queries.graphs(engine), graph=graph or "", round=r)

    @app.get("/runs/{trace_id}", response_class=HTMLResponse)
    def run_page(request: Request, trace_id: str) -> HTMLResponse:
        try:
            run = queries.run_detail(engine, trace_id)
        except PromptloopError as exc:
            raise HTTPException(404, str(exc)) from exc
        return page(request, "run.html", run=run)

    @app.get("/pairs", response_class=HTMLResponse)
    def pairs_page(request: Request, round: str | None = None) -> HTMLResponse:  # noqa: A002
        r = opt_int(round, "round")
        return page(request, "pairs.html", pairs=queries.pairs(engine, round_index=r), round=r)

    @app.get("/versions", response_class=HTMLResponse)
    def versions_page(request: Request) -> HTMLResponse:
        return page(request, "versions.html", versions=queries.versions(engine),
                    has_losses=bool(queries.loss_curves(engine)))

    @app.get("/versions/losses.png")
    def losses_plot() -> Response:
        from promptloop.evaluation.report import plot_loss_curves

        curves = queries.loss_curves(engine)
        if not curves:
            raise HTTPException(404, "no trained version has a stored loss curve yet")
        with tempfile.TemporaryDirectory() as tmp:
            path = plot_loss_curves(curves, Path(tmp) / "losses.png", title="training loss per version")
            return Response(path.read_bytes(), media_type="image/png")

    @app.get("/metrics", response_class=HTMLResponse)
    def metrics_page(request: Request, bench: str = "eval") -> HTMLResponse:
        results = queries.evaluations(engine, bench)
        return page(request, "metrics.html", bench=bench, results=results,
                    columns=["judge_total", "intent_cosine", "recall_at_1", "aspect_coverage", "words",
                             "repetition", "unsafe_output_rate"])

    @app.get("/metrics/rounds.png")
    def metrics_plot(bench: str = "eval") -> Response:
        from promptloop.evaluation.report import plot_rounds

        results = queries.evaluations(engine, bench)
        if not results:
            raise HTTPException(404, f"no evaluations on bench '{bench}' yet")
        with tempfile.TemporaryDirectory() as tmp:
            path = plot_rounds(results, Path(tmp) / "rounds.png", title=f"{bench}: metrics per round")
            return Response(path.read_bytes(), media_type="image/png")

    @app.get("/videos/{video_id}")
    def video_file(video_id: int) -> FileResponse:
        with Session(engine) as s:
            v = s.get(Video, row_id(video_id))
        return serve_file_under(settings.home, v and v.path, f"video {video_id}", "video/mp4")

    @app.get("/api/runs")
    def api_runs(graph: str | None = None, round: str | None = None,  # noqa: A002
                 limit: int = Query(200, ge=1, le=10_000)) -> JSONResponse:
        return JSONResponse(jsonable(queries.runs(engine, graph=graph, round_index=opt_int(round, "round"),
                                                  limit=limit)))

    @app.get("/api/runs/{trace_id}")
    def api_run(trace_id: str) -> JSONResponse:
        try:
            return JSONResponse(jsonable(queries.run_detail(engine, trace_id)))
        except PromptloopError as exc:
            raise HTTPException(404, str(exc)) from exc

    return app


def jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


def serve(engine: Engine, settings: Settings, *, host: str = "127.0.0.1", port: int = 8501,
          token: str | None = None) -> None:
    import uvicorn

    uvicorn.run(create_app(engine, settings, token=token, host=host), host=host, port=port, log_level="warning")
