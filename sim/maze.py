"""Grid mazes in the style of ViLaSR's maze task: a drawn maze with a start S and an end E, and
questions about the route between them (the model traces it with Path Tracer lines).

A maze is a perfect maze (exactly one route between any two cells) carved by a randomised depth-first
search on an ``n × n`` grid; cells are (row, col), row 0 at the top of the image.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

MOVES = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
Q_ROUTE = ("This is a maze on a {n}x{n} grid seen from above. The start cell is marked S (red) and the end cell is "
           "marked E (green); black lines are walls. Moving only through open passages, which sequence of moves "
           "leads from S to E? Each move is a direction and a number of cells.")
Q_TURNS = ("This is a maze on a {n}x{n} grid seen from above. The start cell is marked S (red) and the end cell is "
           "marked E (green); black lines are walls. Following the only route from S to E through open passages, "
           "how many times does the route change direction?")


@dataclass
class Maze:
    """Attributes:
    n: Grid side (cells).
    open: Set of open passages, each a sorted pair of adjacent cells.
    start, end: Cells (row, col).
    """

    n: int
    open: set
    start: tuple[int, int]
    end: tuple[int, int]

    def neighbours(self, cell):
        r, c = cell
        for dr, dc in MOVES.values():
            other = (r + dr, c + dc)
            if tuple(sorted((cell, other))) in self.open:
                yield other

    def route(self) -> list[tuple[int, int]]:
        """Cells from start to end (breadth-first search)."""
        prev = {self.start: None}
        queue = deque([self.start])
        while queue:
            cell = queue.popleft()
            for other in self.neighbours(cell):
                if other not in prev:
                    prev[other] = cell
                    queue.append(other)
        path, cell = [], self.end
        while cell is not None:
            path.append(cell)
            cell = prev[cell]
        return path[::-1]


def generate_maze(rng: np.random.Generator, n: int) -> Maze:
    """A perfect ``n × n`` maze; start and end in opposite halves, at least ``n`` cells apart on the route."""
    open_: set = set()
    seen = {(0, 0)}
    stack = [(0, 0)]
    while stack:
        r, c = stack[-1]
        options = [(r + dr, c + dc) for dr, dc in MOVES.values() if 0 <= r + dr < n and 0 <= c + dc < n and (r + dr, c + dc) not in seen]
        if not options:
            stack.pop()
            continue
        nxt = options[int(rng.integers(len(options)))]
        open_.add(tuple(sorted(((r, c), nxt))))
        seen.add(nxt)
        stack.append(nxt)
    while True:
        start = (int(rng.integers(n)), int(rng.integers(n // 2)))
        end = (int(rng.integers(n)), int(rng.integers(n - n // 2, n)))
        maze = Maze(n, open_, start, end)
        if len(maze.route()) > n:
            return maze


def moves(route: list[tuple[int, int]]) -> list[tuple[str, int]]:
    """Run-length moves along a route: [("right", 2), ("down", 1), …]."""
    out: list[tuple[str, int]] = []
    for a, b in zip(route, route[1:]):
        name = next(k for k, v in MOVES.items() if v == (b[0] - a[0], b[1] - a[1]))
        if out and out[-1][0] == name:
            out[-1] = (name, out[-1][1] + 1)
        else:
            out.append((name, 1))
    return out


def format_moves(ms: list[tuple[str, int]]) -> str:
    return ", ".join(f"{d} {k}" for d, k in ms)


CELL_PX, MARGIN_PX = 56, 14  # default drawing geometry (the teacher engine traces routes on it)


def draw_maze(maze: Maze, cell_px: int = CELL_PX, margin_px: int = MARGIN_PX) -> Image.Image:
    """RGB image of the maze: white cells, black walls (3 px), S red and E green cell labels."""
    n = maze.n
    size = n * cell_px + 2 * margin_px
    img = Image.new("RGB", (size, size), "white")
    d = ImageDraw.Draw(img)
    for cell, colour in ((maze.start, (235, 70, 60)), (maze.end, (60, 170, 80))):
        r, c = cell
        x, y = margin_px + c * cell_px, margin_px + r * cell_px
        d.rectangle([x + 6, y + 6, x + cell_px - 6, y + cell_px - 6], fill=colour)
        d.text((x + cell_px // 2 - 3, y + cell_px // 2 - 5), "S" if cell == maze.start else "E", fill="white")
    for r in range(n):
        for c in range(n):
            x, y = margin_px + c * cell_px, margin_px + r * cell_px
            if r == 0 or tuple(sorted(((r, c), (r - 1, c)))) not in maze.open:
                d.line([x, y, x + cell_px, y], fill="black", width=3)
            if c == 0 or tuple(sorted(((r, c), (r, c - 1)))) not in maze.open:
                d.line([x, y, x, y + cell_px], fill="black", width=3)
    d.line([margin_px, size - margin_px, size - margin_px, size - margin_px], fill="black", width=3)
    d.line([size - margin_px, margin_px, size - margin_px, size - margin_px], fill="black", width=3)
    return img


def maze_questions(maze: Maze, image_path: str, rng: np.random.Generator) -> list[dict]:
    """Two questions about one maze (ViLaSR-eval items, ``data_type`` ``image``)."""
    route = maze.route()
    ms = moves(route)
    correct = format_moves(ms)
    distractors: list[str] = []
    flip = {"up": "down", "down": "up", "left": "right", "right": "left"}
    for _ in range(50):
        if len(distractors) == 3:
            break
        alt = list(ms)
        k = int(rng.integers(len(alt)))
        kind = int(rng.integers(3))
        if kind == 0:
            alt[k] = (flip[alt[k][0]], alt[k][1])
        elif kind == 1:
            alt[k] = (alt[k][0], max(1, alt[k][1] + (1 if rng.random() < 0.5 else -1)))
        else:
            alt = [(flip[d], s) for d, s in reversed(alt)]
        text = format_moves(alt)
        if text != correct and text not in distractors:
            distractors.append(text)
    options = [correct] + distractors
    order = rng.permutation(len(options))
    shuffled = [options[i] for i in order]
    letters = "ABCD"
    base = {"image_path": [image_path], "data_type": "image", "maze": {"n": maze.n, "start": list(maze.start),
                                                                       "end": list(maze.end), "route": [list(c) for c in route]}}
    return [
        {"question": Q_ROUTE.format(n=maze.n), "options": [f"{letters[i]}. {t}" for i, t in enumerate(shuffled)],
         "answer": letters[shuffled.index(correct)], "problem_type": "multiple choice",
         "original_question_type": "maze_route", **base, "ground_truth": {"moves": correct}},
        {"question": Q_TURNS.format(n=maze.n), "options": [], "answer": str(len(ms) - 1), "problem_type": "numerical",
         "original_question_type": "maze_turns", **base, "ground_truth": {"value": len(ms) - 1}},
    ]
