"""`promptloop render` and `promptloop judge`: one video in, one video scored."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from promptloop.commands.shared import UserError, console, out, print_json, services_of


def render_cmd(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="What to render (a rewrite, or any prompt)")],
    model: Annotated[str | None, typer.Option(help="Hub id, local folder, or 'tiny' (random weights, CPU) "
                                              "(default video.model)")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed; the same prompt, model, seed and settings are "
                                      "rendered once and then served from the cache")] = 0,
    out_file: Annotated[Path | None, typer.Option("--out", help="Also copy the MP4 (and its .png thumbnail) "
                                                  "here")] = None,
    frames: Annotated[int | None, typer.Option(min=1, help="Frames (CogVideoX: 8k+1, Wan: 4k+1, LTX: 8k+1)")] = None,
    width: Annotated[int | None, typer.Option(min=8)] = None,
    height: Annotated[int | None, typer.Option(min=8)] = None,
    steps: Annotated[int | None, typer.Option(min=1, help="Denoising steps")] = None,
    fps: Annotated[int | None, typer.Option(min=1)] = None,
    guidance: Annotated[float | None, typer.Option(min=0.0, help="Classifier-free guidance scale")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Render one video with a diffusers text-to-video pipeline (MP4 + thumbnail, recorded in the store)."""
    from promptloop.agents.renderer import RenderRequest
    from promptloop.agents.video.cache import RenderCache

    if not prompt.strip():
        raise UserError("the prompt is empty")
    if out_file is not None and out_file.suffix.lower() != ".mp4":
        raise UserError(f"--out must name an .mp4 file, got '{out_file}'")
    rt = services_of(ctx)
    renderer = rt.renderer(model)
    request = RenderRequest(prompt=prompt, seed=seed, num_frames=frames, width=width, height=height, steps=steps,
                            fps=fps, guidance_scale=guidance)  # unset fields: Settings.video, then the model's
    if renderer.label:
        console.print(f"[yellow]{renderer.label}[/]")
    with console.status(f"rendering with {renderer.model_id} ..."):
        video = RenderCache(renderer, rt.engine).render_many([request])[0]
    a = video.artifact
    if a.status != "ok":
        raise UserError(f"render failed (video {video.video_id}): {a.error}")
    path = Path(a.path)
    if out_file is not None:
        out_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, out_file)
        if a.thumbnail_path:
            shutil.copyfile(a.thumbnail_path, out_file.with_suffix(".png"))
        path = out_file
    info = {"video_id": video.video_id, "path": str(path), "thumbnail": str(path.with_suffix(".png")),
            "model": a.model, "seed": a.seed, "frames": a.frames, "fps": a.fps, "width": a.width,
            "height": a.height, "cached": video.cached, "params": a.params, "label": renderer.label}
    if as_json:
        print_json(info)
        return
    console.print(f"{'cached' if video.cached else 'rendered'}: {path} ({a.frames} frames, {a.width}x{a.height}, "
                  f"{a.fps:g} fps, {a.model}, seed {a.seed}; video id {video.video_id})")


def judge_cmd(
    ctx: typer.Context,
    video: Annotated[Path, typer.Argument(help="An MP4 (or any video ffmpeg reads)")],
    prompt: Annotated[str, typer.Option(help="The user's original prompt the video is judged against")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Score one video on every video-level dimension: VBench-style frame metrics, text-video alignment,
    frame safety (open_nsfw) and the VLM judge when one is configured. Unavailable dimensions say why."""
    from promptloop.agents.judge import weighted_total

    if not video.is_file():
        raise UserError(f"no video file at {video}")
    rt = services_of(ctx)
    try:
        scores = rt.video_scorer.score_file(video, prompt)
    except (ValueError, OSError) as exc:
        raise UserError(f"cannot read {video} as a video: {exc}") from exc
    total, used = weighted_total(scores.dimensions, rt.settings.video.weights)
    if as_json:
        print_json({"video": str(video), "prompt": prompt, "dimensions": scores.dimensions, "raw": scores.raw,
                    "details": scores.details, "video_total": total if used else None, "weights": used,
                    "frames": scores.frames, "seconds": scores.seconds})
        return
    table = Table("dimension", "score", "raw", "weight", "note", title=f"{video.name}: {scores.frames} frames, "
                  f"scored in {scores.seconds:.2f} s")
    for name, raw in scores.raw.items():
        value = scores.dimensions.get(name)
        d = scores.details.get(name, {})
        note = d.get("reason") or d.get("rationale") or ""
        table.add_row(name, "-" if value is None else f"{value:.3f}", "-" if raw is None else f"{raw:.4g}",
                      f"{used[name]:.2f}" if name in used else "", str(note)[:90])
    out.print(table)
    out.print(f"video total: {total:.3f}" if used else "video total: unavailable (no weighted dimension measured)")
