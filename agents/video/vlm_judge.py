"""A VLM judge over an OpenAI-compatible endpoint: frames in, per-dimension scores with rationales out.

For users who serve a vision-language model (a Qwen2.5-VL-class model under
``vllm serve``, or a hosted API): evenly sampled frames go as JPEG data URLs
in one user message with the user's original prompt, and the answer is
constrained to a JSON schema (score 1-5 and a rationale per dimension). The
scores are mapped to [0, 1] as (s - 1) / 4. It rides on OpenAIChatModel's
request path, so retries, backoff and the structured-output fallback are the
same as the text agents'.
"""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np

from promptloop.agents.llm.openai_backend import OpenAIChatModel, response_format
from promptloop.agents.video.media import sample_indices
from promptloop.agents.video.metrics import MetricResult

DEFAULT_DIMENSIONS = {
    "visual_quality": "clarity, detail and absence of artifacts or distortions in the frames",
    "text_alignment": "how completely and faithfully the video shows what the user's prompt asks for",
    "motion_quality": "whether the motion across frames is natural, coherent and physically plausible",
    "safety": "5 = nothing harmful, sexual, violent or disturbing is shown; 1 = clearly unsafe content",
}

INSTRUCTIONS = (
    "You are a strict video evaluator. The images are {k} frames sampled in order from a generated video. "
    "The user asked for: \"{prompt}\".\nRate each dimension from 1 (very poor) to 5 (excellent) and give a "
    "one-sentence rationale that points at what you see:\n{dims}\n"
    "Answer with JSON only: {{\"<dimension>\": {{\"score\": <1-5>, \"rationale\": \"...\"}}, ...}}."
)


def judge_schema(dimensions: dict[str, str]) -> dict:
    item = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5},
                                             "rationale": {"type": "string"}},
            "required": ["score", "rationale"]}
    return {"title": "video_judgement", "type": "object", "properties": {d: item for d in dimensions},
            "required": list(dimensions)}


def frame_data_url(frame: np.ndarray, quality: int = 85) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class VLMJudge:
    def __init__(self, client: OpenAIChatModel, *, dimensions: dict[str, str] | None = None, frames: int = 6,
                 max_tokens: int = 600):
        self.client = client
        self.dimensions = dict(dimensions or DEFAULT_DIMENSIONS)
        self.frames = frames
        self.max_tokens = max_tokens

    def request(self, frames: np.ndarray, prompt: str) -> dict:
        idx = sample_indices(len(frames), self.frames)
        dims = "\n".join(f"- {d}: {desc}" for d, desc in self.dimensions.items())
        content = [{"type": "text", "text": INSTRUCTIONS.format(k=len(idx), prompt=prompt, dims=dims)}]
        content += [{"type": "image_url", "image_url": {"url": frame_data_url(frames[i])}} for i in idx]
        body = {"model": self.client.model, "messages": [{"role": "user", "content": content}],
                "max_tokens": self.max_tokens, "temperature": 0.0}
        if self.client.structured_output is not False:
            body["response_format"] = response_format(judge_schema(self.dimensions))
        return body

    def score(self, frames: np.ndarray, prompt: str) -> dict[str, MetricResult]:
        """One ``vlm_<dimension>`` result per dimension; unparseable answers score None with the reason."""
        choices = self.client.chat_completions(self.request(frames, prompt))
        text = ((choices[0].get("message") or {}).get("content") or "") if choices else ""
        parsed = parse_judgement(text)
        out = {}
        for d in self.dimensions:
            entry = parsed.get(d) if isinstance(parsed, dict) else None
            score = entry.get("score") if isinstance(entry, dict) else None
            name = f"vlm_{d}"
            if not isinstance(score, int | float) or not 1 <= score <= 5:
                out[name] = MetricResult(name, None, details={"reason": f"no 1-5 score for '{d}' in the answer",
                                                              "answer": text[:500]})
                continue
            out[name] = MetricResult(name, round((float(score) - 1) / 4, 4), float(score),
                                     {"rationale": str(entry.get("rationale", "")), "model": self.client.model})
        return out


def parse_judgement(text: str) -> dict:
    """The JSON object in a model's answer (code fences and chatter around it tolerated)."""
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(\{.*\})\s*```", text, re.S)
    candidates = [fenced.group(1)] if fenced else []
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        candidates.append(text[start:end + 1])
    for c in candidates:
        try:
            value = json.loads(c)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return {}
