"""Drawing the model's boxes and lines with Pillow, exactly as the reference draws them.

Source: AntResearchNLP/ViLaSR ``utils/edit_image.py`` (``plot_bounding_boxes``, ``plot_movement``),
described in ``test/data/spec/VILASR_PROTOCOL.md`` §3. Coordinates are pixels of the image drawn on
(the resized image), origin top-left. Items must have passed
:meth:`vilasr_ros.annotations.AnnotationState.plan` (numbers checked).
"""

from __future__ import annotations

from PIL import Image, ImageColor, ImageDraw

BOX_COLORS = [
    "red", "green", "blue", "yellow", "orange", "pink", "purple", "brown", "gray", "beige",
    "turquoise", "cyan", "magenta", "lime", "navy", "maroon", "teal", "olive", "coral",
    "lavender", "violet", "gold", "silver",
] + list(ImageColor.colormap)
"""Box colour by position in the image's merged box list (reference order, then PIL's names)."""

OUTLINE_WIDTH_PX = 4
POINT_RADIUS_PX = 4


def draw_boxes(draw: ImageDraw.ImageDraw, size: tuple[int, int], boxes: list[dict]) -> None:
    """Outline boxes (width 4) and write each label at (x1+8, y1+6) in the box colour.

    The reference scales by ``size / size`` before truncating with ``int``; we keep that arithmetic
    so floating-point rounding matches pixel for pixel.
    """
    width, height = size
    for i, box in enumerate(boxes):
        coords = box["bbox_2d"]
        if len(coords) != 4:
            continue
        color = BOX_COLORS[i % len(BOX_COLORS)]
        x1 = int(coords[0] / width * width)
        y1 = int(coords[1] / height * height)
        x2 = int(coords[2] / width * width)
        y2 = int(coords[3] / height * height)
        if x1 > x2:
            x1, x2 = x2, x1
        if y1 > y2:
            y1, y2 = y2, y1
        draw.rectangle(((x1, y1), (x2, y2)), outline=color, width=OUTLINE_WIDTH_PX)
        draw.text((x1 + 8, y1 + 6), box["label"], fill=color)


def draw_lines(draw: ImageDraw.ImageDraw, size: tuple[int, int], lines: list[dict]) -> None:
    """Black line (width 4) with a red dot (radius 4) at the start and a blue dot at the end."""
    width, height = size
    for line in lines:
        start, end = line["start_point_2d"], line["end_point_2d"]
        sx, sy = int(start[0]) / width * width, int(start[1]) / height * height
        ex, ey = int(end[0]) / width * width, int(end[1]) / height * height
        draw.line((sx, sy, ex, ey), fill="black", width=OUTLINE_WIDTH_PX)
        for (x, y), color in (((sx, sy), "red"), ((ex, ey), "blue")):
            r = POINT_RADIUS_PX
            draw.ellipse([(x - r, y - r), (x + r, y + r)], fill=color)


def draw_annotations(image: Image.Image, boxes: list[dict], lines: list[dict]) -> Image.Image:
    """A copy of ``image`` with boxes drawn first, then lines (reference order).

    Args:
        image: RGB image the model referred to (already resized; may carry earlier drawings).
        boxes: Merged box state for the new image.
        lines: Merged line state for the new image.

    Returns:
        A new RGB ``PIL.Image.Image`` of the same size.
    """
    canvas = image.copy()
    draw = ImageDraw.Draw(canvas)
    draw_boxes(draw, canvas.size, boxes)
    draw_lines(draw, canvas.size, lines)
    return canvas
