"""The render cache: the store's ``videos`` table, keyed by (prompt text, model, seed, params).

A request whose key has a row with status ok and a file still on disk is
never rendered again, in this process or any other sharing the store; a row
that failed (or whose file was deleted) is rendered again and updated in
place. Each returned video carries its store id, so rewards and candidates
link to it (graphs/persist.py links candidates once they are stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import select

from promptloop.agents.renderer import Renderer, RenderRequest, VideoArtifact
from promptloop.store import repository as repo
from promptloop.store.engine import session_scope
from promptloop.store.models import Video


@dataclass
class StoredVideo:
    video_id: int
    artifact: VideoArtifact
    cached: bool

    @property
    def ok(self) -> bool:
        return self.artifact.status == "ok"


class RenderCache:
    def __init__(self, renderer: Renderer, engine: Engine):
        self.renderer = renderer
        self.engine = engine
        self.rendered = 0  # renders this cache asked for (tests and reports read it)

    def render_many(self, requests: Sequence[RenderRequest]) -> list[StoredVideo]:
        keys = [self.renderer.cache_key(r) for r in requests]
        found = self._lookup(set(keys))
        todo: dict[str, RenderRequest] = {}
        for key, req in zip(keys, requests, strict=True):
            row = found.get(key)
            if not (row and row.status == "ok" and row.path and Path(row.path).is_file()):
                todo.setdefault(key, req)
        if todo:
            arts = self.renderer.render_many(list(todo.values()))
            self.rendered += sum(a.status == "ok" for a in arts)
            self._save({k: (a, todo[k].prompt) for k, a in zip(todo, arts, strict=True)})
            found = self._lookup(set(keys))
        return [StoredVideo(found[k].id, _artifact(found[k]), k not in todo) for k in keys]

    def _lookup(self, keys: set[str]) -> dict[str, Video]:
        with session_scope(self.engine) as s:
            rows = list(s.exec(select(Video).where(Video.content_hash.in_(keys)))) if keys else []
            for r in rows:
                s.expunge(r)
        return {r.content_hash: r for r in rows}

    def _save(self, arts: dict[str, tuple[VideoArtifact, str]]) -> None:
        with session_scope(self.engine) as s:
            for key, (a, prompt) in arts.items():
                # the rendered text travels with the row: a video rendered outside a collection has no candidate
                fields = dict(renderer=self.renderer.name, model=a.model, seed=a.seed,
                              params={**a.params, "prompt": prompt}, path=a.path,
                              thumbnail_path=a.thumbnail_path, frames=a.frames, fps=a.fps, width=a.width,
                              height=a.height, status=a.status, error=a.error)
                row, created = repo.add_video(s, key, **fields)
                if not created:  # a failed or vanished render done again: the row follows the new attempt
                    for k, v in fields.items():
                        setattr(row, k, v)
                    s.add(row)


def _artifact(row: Video) -> VideoArtifact:
    params = {k: v for k, v in (row.params or {}).items() if k != "prompt"}
    return VideoArtifact(path=row.path, thumbnail_path=row.thumbnail_path, model=row.model, seed=row.seed,
                         frames=row.frames, fps=row.fps, width=row.width, height=row.height, params=params,
                         status=row.status, error=row.error)
