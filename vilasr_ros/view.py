"""``vilasr view TRACE_DIR``: one self-contained HTML page that shows a person what the model did.

The page holds the question (type, options), the input images, every turn — the model's thinking,
its tool calls (boxes and lines as written) and the images it drew, each labelled with the model's
own image number ("image 17, drawn on image 11 = input frame 10") — the answer and finish reason,
and the grounded target with the image its box came from. Images are embedded as ``data:`` URLs, so
the file can be mailed or attached to an issue; nothing is loaded from the network.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

from vilasr_ros.families import DEFAULT_FAMILY
from vilasr_ros.trace import Trace

CSS = """
body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:20px} h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.meta{color:#555} .grid{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0;border:1px solid #ccc;padding:4px;background:#fafafa}
figure img{display:block;max-width:280px} figcaption{font-size:12px;color:#333;margin-top:2px}
pre{white-space:pre-wrap;background:#f4f4f4;padding:8px;border-radius:4px;font-size:13px}
.answer{font-size:18px;background:#e8f5e9;padding:10px;border-radius:4px}
.error{background:#ffebee;padding:8px;border-radius:4px} table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:left}
"""


def _data_url(image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(trace: Trace, k: int, note: str = "") -> str:
    info = trace.images[k - 1]
    caption = f"image {info.index}"
    if info.drawn_from is not None:
        caption += f", drawn on image {info.drawn_from}"
    caption += f" (input frame {info.source_frame})"
    if note:
        caption += f" — {note}"
    return (f'<figure data-image-index="{info.index}"><img alt="image {info.index}" '
            f'src="{_data_url(trace.pil_images[k - 1])}"><figcaption>{html.escape(caption)}</figcaption></figure>')


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _rounded(value):
    """Coordinates to 0.01 px for display (a 0–1000 family's conversion leaves float noise)."""
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    return value


def render_html(trace: Trace, title: str = "") -> str:
    """The page for a loaded trace (see the module docstring)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title or trace.question)}</title>"
             f"<style>{CSS}</style></head><body>"]
    parts.append(f"<h1>{_e(trace.question)}</h1>")
    engine = trace.engine or {}
    parts.append(f"<p class='meta'>type: {_e(trace.problem_type)} · layout: {_e(trace.kind)} · engine: "
                 f"{_e(engine.get('engine'))} ({_e(engine.get('model', ''))}) · {len(trace.turns)} turns · "
                 f"{len(trace.images)} images · {trace.total_s:.2f} s · model family: "
                 f"{_e((trace.settings or {}).get('model_family', DEFAULT_FAMILY))}</p>")
    if trace.options:
        parts.append("<p><b>Options:</b><br>" + "<br>".join(_e(o) for o in trace.options) + "</p>")
    inputs = [img.index for img in trace.images if img.drawn_from is None]
    parts.append(f"<h2>Input images ({len(inputs)})</h2><div class='grid'>"
                 + "".join(_figure(trace, k) for k in inputs) + "</div>")
    for t, turn in enumerate(trace.turns, start=1):
        parts.append(f"<h2>Turn {t} <span class='meta'>({_e(turn.finish_reason)}, {turn.engine_s:.2f} s"
                     + (f", {turn.completion_tokens} tokens" if turn.completion_tokens else "") + ")</span></h2>")
        parts.append(f"<pre class='turn-text'>{_e(turn.text)}</pre>")
        calls = [("box", b) for b in turn.boxes] + [("line", ln) for ln in turn.lines]
        if calls:
            rows = "".join(f"<tr><td>{kind}</td><td>{_e(item.get('index'))}</td><td>{_e(item.get('label'))}</td>"
                           f"<td>{_e(_rounded(item.get('bbox_2d') or [item.get('start_point_2d'), item.get('end_point_2d')]))}</td></tr>"
                           for kind, item in calls)
            parts.append("<table><tr><th>tool</th><th>on image</th><th>label</th><th>coordinates (pixels of the image "
                         "the model saw; the text above is in the model's own convention)</th>"
                         f"</tr>{rows}</table>")
        if turn.error:
            parts.append(f"<p class='error'>{_e(turn.error)}</p>")
        if turn.new_images:
            parts.append("<div class='grid'>" + "".join(_figure(trace, k) for k in turn.new_images) + "</div>")
    parts.append("<h2>Answer</h2>")
    parts.append(f"<p class='answer' id='answer'>{_e(trace.answer if trace.answer is not None else '(no answer)')}</p>")
    parts.append(f"<p class='meta'>finish reason: {_e(trace.finish_reason)}</p>")
    if trace.error:
        parts.append(f"<p class='error'>{_e(trace.error)}</p>")
    if trace.target:
        tgt = trace.target
        parts.append("<h2>Target</h2>")
        if tgt.get("ok"):
            parts.append(f"<p>{_e(tgt.get('target'))}: object at {_e(tgt.get('position_world'))} m in "
                         f"{_e(tgt.get('frame_id'))}; approach pose {_e(tgt.get('approach_position'))}, "
                         f"orientation xyzw {_e(tgt.get('approach_orientation'))}; confidence {_e(tgt.get('confidence'))}; "
                         f"box {_e(tgt.get('box_px'))} (sensor pixels) of source frame {_e(tgt.get('frame_index'))}</p>")
        else:
            parts.append(f"<p class='error'>no target: {_e(tgt.get('reason'))}</p>")
        k = tgt.get("image_index")
        if isinstance(k, int) and 1 <= k <= len(trace.images):
            parts.append("<div class='grid'>" + _figure(trace, k, "the box the target was grounded from") + "</div>")
        parts.append(f"<details><summary>grounding result</summary><pre>{_e(json.dumps(tgt, indent=1))}</pre></details>")
    # Flag any image the browser could not decode (and record what did load), visibly.
    parts.append("<script>for(const im of document.images){const mark=()=>{im.dataset.loaded=im.naturalWidth>0?'1':'0';"
                 "im.dataset.width=im.naturalWidth;if(!(im.naturalWidth>0)){const w=document.createElement('p');"
                 "w.className='error';w.textContent=im.alt+' failed to load';im.after(w);}};"
                 "if(im.complete)mark();else{im.addEventListener('load',mark);im.addEventListener('error',mark);}}</script>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(trace_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``TRACE_DIR/trace.html`` (or ``out``) for a saved trace.

    Raises:
        OSError: The trace cannot be read or the page written. ValueError: Not a trace.
    """
    trace_dir = Path(trace_dir)
    trace = Trace.load(trace_dir)
    path = Path(out) if out else trace_dir / "trace.html"
    path.write_text(render_html(trace, title=trace_dir.name), encoding="utf-8")
    return path
