"""The new surfaces under abuse (issue 28's catalogue): each class of fault with its example reproduced.

Goals from answers that say nothing, decompression bombs and frames counted before decoding, content
that does not match its declared encoding, map poses that lie. The lifecycle, reply-budget and
server-limit classes are tested beside the node and the server (test_ros.py, test_serve.py).
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import time

import numpy as np
import pytest
from PIL import Image

from vilasr_ros.agent import AgentConfig, SpatialAgent, goal_decision
from vilasr_ros.buffer import BufferConfig, FrameBuffer
from vilasr_ros.engines import create_engine
from vilasr_ros.errors import ImageError, MessageError, QueryError
from vilasr_ros.query import BadQueryError, Query, parse_query
from vilasr_ros.reasoner import Reasoner, ReasonerConfig
from vilasr_ros.sources import open_source

ANSWER = "<think> done </think> Action: Answer\n<answer> by the wall </answer>"


def _box_turn(box) -> str:
    return ("<think> box </think> Action: Object Mapper\n```json\n"
            + json.dumps([{"index": 11, "bbox_2d": box, "label": "sofa"}]) + "\n```")


@pytest.fixture(scope="module")
def demo_frames():
    with open_source("sim:demo") as source:
        return list(source)


def _agent(frames, turns) -> SpatialAgent:
    buf = FrameBuffer(BufferConfig(max_interval_s=0.0, min_translation_m=0.0))
    now = time.time()
    for i, f in enumerate(frames):
        buf.add(dataclasses.replace(f, stamp_s=now - len(frames) + i))
    reasoner = Reasoner(create_engine("replay", responses=turns), ReasonerConfig(max_turns=4))
    return SpatialAgent(reasoner, buf, AgentConfig(trace_root=None, max_age_s=None))


# ----------------------------------------------------------------------------- one query schema


def test_one_query_schema_for_the_topic_the_server_and_python():
    topic = parse_query('{"id": 7, "question": "Which?", "type": "Multiple Choice", "options": ["A. x", "B. y"], '
                        '"selection": "coverage", "kind": "multi_view"}')
    direct = Query(question="Which?", id="7", problem_type="multiple choice", options=["A. x", "B. y"],
                   selection="coverage", kind="multi_view")
    assert topic == direct and topic.selection == "coverage" and topic.kind == "multi_view"
    assert parse_query(json.dumps(direct.to_dict())) == direct  # round trip under the canonical names
    with pytest.raises(BadQueryError, match="not both"):
        parse_query('{"question": "?", "type": "free-form", "problem_type": "free-form"}')
    with pytest.raises(BadQueryError, match="'selection' must be one of uniform, latest, coverage"):
        Query(question="?", selection="random")
    from vilasr_ros.serve import QueryRequest, ServeConfig

    served = QueryRequest('{"id": 7, "question": "Which?", "problem_type": "multiple choice", "options": ["A. x", '
                          '"B. y"], "kind": "multi_view", "loop": {"max_turns": 3}}', [object()], ServeConfig())
    assert served.query == dataclasses.replace(direct, selection=None) and served.loop.max_turns == 3
    with pytest.raises(QueryError, match="unknown query fields \\['target'\\]"):  # the robot grounds, not the server
        QueryRequest('{"question": "?", "target": "sofa"}', [object()], ServeConfig())


# ----------------------------------------------------------------------------- goals from answers that say nothing


@pytest.mark.parametrize("turns, reason", [
    ([_box_turn([47, 93, 209, 202]), "<think> done </think> Action: Answer\n<answer> </answer>"], "answer is empty"),
    ([_box_turn([100, 100, 100, 100]), ANSWER], "degenerate"),
    ([_box_turn([0, 0, 99999, 99999]), ANSWER], "outside the"),
    (["whole image", ANSWER], "whole view"),
])
def test_an_answer_that_says_nothing_sends_no_goal(demo_frames, turns, reason):
    """Issue 28 #11: an empty answer, a zero-area box, a box of [0, 0, 99999, 99999] (clipped to the
    frame) and one covering the whole image each end without a goal, and the answer says why."""
    if turns[0] == "whole image":
        from vilasr_ros.protocol import resized_size

        w, h = resized_size(*demo_frames[0].size, ReasonerConfig().max_pixels)
        turns = [_box_turn([0, 0, w, h]), ANSWER]
    result = _agent(demo_frames, turns).answer(parse_query('{"id": "n", "question": "Go to the sofa", "target": "sofa"}'))
    a = result.answer
    assert not a.goal_sent and a.target_pose is None
    assert reason in a.goal_reason, a.goal_reason


def test_the_same_box_with_an_answer_is_still_a_goal(demo_frames):
    a = _agent(demo_frames, [_box_turn([47, 93, 209, 202]), ANSWER]).answer(
        parse_query('{"id": "g", "question": "Go to the sofa", "target": "sofa"}')).answer
    assert a.goal_sent and a.goal_reason is None


# ----------------------------------------------------------------------------- bounded decoding


def _png(size, mode="L") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def test_serve_refuses_a_decompression_bomb_before_decoding_it():
    """Issue 28 #2 at test scale: all-zero PNGs that are small on the wire and large decoded are refused
    from their headers, per frame and per request; frames are counted before any is read."""
    from vilasr_ros.serve import ServeConfig, decode_frames

    config = ServeConfig(max_frames=4, max_frame_pixels=1_000_000, max_request_pixels=2_000_000)
    bomb = _png((2000, 2000))
    assert len(bomb) < 20_000  # 4 MP that compress to a few KB
    with pytest.raises(QueryError, match=r"frame 0 \(b.png\) is 2000x2000; at most 1000000 pixels per frame"):
        decode_frames([("b.png", bomb)], config)
    ok = _png((1000, 1000))
    with pytest.raises(QueryError, match="at most 2000000 per request"):
        decode_frames([("a.png", ok), ("b.png", ok), ("c.png", ok)], config)
    with pytest.raises(QueryError, match="5 frames; at most 4"):  # counted before the (garbage) bytes are read
        decode_frames([(f"{k}.png", b"garbage") for k in range(5)], config)
    assert [im.size for im in decode_frames([("a.png", _png((64, 48), "RGBA"))], config)] == [(64, 48)]


def test_one_image_loader_names_every_bad_file(tmp_path):
    from vilasr_ros.images import image_problems, open_rgb

    (tmp_path / "ok.png").write_bytes(_png((8, 6), "RGBA"))
    (tmp_path / "cut.png").write_bytes(_png((64, 64), "RGB")[:60])
    (tmp_path / "big.png").write_bytes(_png((3000, 3000)))
    assert open_rgb(tmp_path / "ok.png").getpixel((0, 0)) == (255, 255, 255)  # alpha over white
    problems = image_problems([tmp_path / "ok.png", tmp_path / "cut.png", tmp_path / "gone.png", tmp_path / "big.png",
                               tmp_path / "cut.png"], max_pixels=4_000_000)
    assert list(problems) == [str(tmp_path / n) for n in ("cut.png", "gone.png", "big.png")]  # each once, in order
    reasons = list(problems.values())
    assert "cut.png" in reasons[0] and "gone.png: no such file" in reasons[1] and "big.png is 3000x3000" in reasons[2]
    with pytest.raises(ImageError, match="refused before decoding"):
        open_rgb(tmp_path / "big.png", max_pixels=4_000_000)


class _Compressed:
    def __init__(self, fmt: str, data: bytes):
        self.format, self.data = fmt, data


def test_compressed_depth_whose_content_lies_about_its_encoding_is_dropped():
    """Issue 28 #8: an 8-bit PNG under a '16UC1; compressedDepth' header is refused, not read as mm."""
    from vilasr_ros.messages import COMPRESSED, compress_depth, decode_depth

    header = struct.pack("<iff", 0, 0.0, 0.0)
    eight_bit = np.full((4, 6), 107, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(eight_bit).save(buf, format="PNG")
    with pytest.raises(MessageError, match="declares 16UC1 but its PNG is L"):
        decode_depth(_Compressed("16UC1; compressedDepth png", header + buf.getvalue()), COMPRESSED)
    depth = np.full((4, 6), 1.682, np.float32)
    fmt, data = compress_depth(depth)
    np.testing.assert_allclose(decode_depth(_Compressed(fmt, data), COMPRESSED), depth, atol=1e-3)


# ----------------------------------------------------------------------------- map poses that lie


def test_map_poses_are_bounded_and_their_covariance_read():
    """Issue 28 #9: NaN or huge AMCL covariance, and a map pose at x = 1e12, are refused; until a
    trusted pose arrives the goal rule sends no goal and says why."""
    from vilasr_ros.pairing import MapAlignment

    align = MapAlignment(lambda t: (np.eye(4), "odom"), max_covariance_m2=1.0)
    cov = np.zeros(36)
    cov[[0, 7]] = 0.05
    assert align.add_map_pose(1.0, np.eye(4), "map", cov) and align.untrusted is None
    far = np.eye(4)
    far[0, 3] = 1e12
    for T, c, match in ((np.eye(4), np.full(36, np.nan), "not finite"), (np.eye(4), cov * 2e7, "above max_map_covariance"),
                        (far, cov, "beyond max_position_m")):
        with pytest.raises(MessageError, match=match):
            align.add_map_pose(2.0, T, "map", c)
        assert match.split()[-1] in align.untrusted
        assert len(align) == 1  # no correction from it
    ok, why = goal_decision(_Stop(), _Grounded(), 0.3, align.untrusted)
    assert not ok and "localisation is not trusted" in why
    assert align.add_map_pose(3.0, np.eye(4), "map", cov) and align.untrusted is None
    assert goal_decision(_Stop(), _Grounded(), 0.3, align.untrusted) == (True, None)


class _Stop:
    finish_reason, answer, turns = "stop", "by the wall", []


class _Grounded:
    ok, turn, confidence, reason = True, None, 0.9, None


def test_an_mcap_chunk_that_would_inflate_past_the_cap_is_refused_before_decompressing(tmp_path, demo_frames):
    """Issue 28 #4 at test scale: a zstd chunk of a few KB that inflates to 64 MiB is refused (cap 16 MiB)
    from its headers; memory never holds the inflated chunk."""
    pytest.importorskip("mcap")
    from mcap.writer import CompressionType, Writer

    from vilasr_ros.sources import SourceError
    from vilasr_ros.sources.bag import BagSource, check_mcap_chunks, write_bag

    bag = write_bag(demo_frames[:2], tmp_path / "bomb", storage="mcap")
    path = next(bag.glob("*.mcap"))
    check_mcap_chunks(path, 16 * 2**20)  # a real bag passes
    bomb_dir = bag  # the same bag folder, its file replaced by the bomb
    with open(path, "wb") as f:
        writer = Writer(f, compression=CompressionType.ZSTD, chunk_size=128 * 2**20)
        writer.start()
        schema = writer.register_schema("std_msgs/msg/String", "ros2msg", b"string data")
        channel = writer.register_channel("/x", "cdr", schema)
        writer.add_message(channel, 0, b"\0" * (64 * 2**20), 0)
        writer.finish()
    assert path.stat().st_size < 200_000
    with pytest.raises(SourceError, match="inflates to .* over the 16777216 byte cap"):
        check_mcap_chunks(path, 16 * 2**20)
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SourceError, match="over the"):
        BagSource(bomb_dir, max_chunk_bytes=16 * 2**20)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 * 1024  # KiB: not inflated
