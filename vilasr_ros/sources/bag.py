"""``bag:PATH`` — ROS 2 bags (sqlite3 or mcap) through ``rosbags``; and writing frames into one.

Reads the messages :mod:`vilasr_ros.messages` decodes (raw and compressed colour and depth,
CameraInfo, Odometry / PoseStamped / PoseWithCovarianceStamped) and pairs them with the same
:class:`~vilasr_ros.pairing.FrameAssembler` the live agent uses, fed in the bag's recorded order: a
bag and the topics it was recorded from give the same frames and poses (pose interpolated between
the odometry around each colour image, ``sync_tolerance_s`` for depth, ``pose_tolerance_s`` for
odometry).

Bad bags: a file that cannot be read on (sqlite "database disk image is malformed", an MCAP chunk
whose CRC does not match, fewer messages than ``metadata.yaml`` lists) raises one
:class:`SourceError` naming the bag, the topic and how far it got; one message that does not
deserialize or decode is skipped, logged and listed in ``skipped``. MCAP files whose chunks carry no
CRC (rosbags' own writer) cannot be checked for corrupted payloads: a warning says so once.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vilasr_ros.errors import ConfigError, require
from vilasr_ros.frames import Frame, FrameError
from vilasr_ros.sources.base import FrameSource, SourceError

logger = logging.getLogger(__name__)

from vilasr_ros.messages import (  # noqa: F401  (decoders re-exported for bag users)
    CAMERA_INFO,
    COMPRESSED,
    IMAGE,
    ODOMETRY,
    POSE_STAMPED,
    POSE_WITH_COVARIANCE,
    camera_info_fields,
    compress_colour,
    compress_depth,
    decode_color,
    decode_depth,
    intrinsics_from_camera_info,
    raw_depth,
    pose_from_message,
    stamp_s,
)


def typestore():
    rosbags_typesys = require("rosbags.typesys", "bags")
    return rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY)


def mcap_has_crcs(path: Path) -> bool | None:
    """Whether an MCAP file's first chunk carries a CRC (what ``ros2 bag record`` writes and
    rosbags checks); None when it cannot be told (no ``mcap`` package, no chunk, unreadable)."""
    try:
        from mcap.reader import make_reader
        from mcap.records import Chunk
        from mcap.stream_reader import StreamReader
    except ImportError:
        return None
    try:
        with open(path, "rb") as f:
            summary = make_reader(f).get_summary()
            if summary is None or not summary.chunk_indexes:
                return None
            f.seek(summary.chunk_indexes[0].chunk_start_offset)
            for record in StreamReader(f, skip_magic=True, emit_chunks=True).records:
                if isinstance(record, Chunk):
                    return record.uncompressed_crc != 0
                return None
    except Exception:  # noqa: BLE001 - a damaged file is reported by the reader itself
        return None
    return None


MAX_CHUNK_BYTES = 512 * 2**20
"""An MCAP chunk that would inflate to more than this is refused before it is decompressed."""


def _inflated_size(compression: str, data: bytes) -> int | None:
    """Bytes a compressed MCAP chunk inflates to, read from its frame headers (every zstd frame of it;
    lz4's content size); None when the headers do not say."""
    if compression == "":
        return len(data)
    if compression == "zstd":
        try:
            from compression import zstd  # type: ignore[import-not-found]  (Python 3.14)
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef]  (what rosbags reads with)
        total, view = 0, memoryview(data)
        while len(view):
            size = zstd.get_frame_info(bytes(view[:18])).decompressed_size
            if size is None:
                return None
            total += size
            view = view[zstd.get_frame_size(view):]
        return total
    if compression == "lz4":
        import lz4.frame

        return lz4.frame.get_frame_info(data).get("content_size") or None
    return None


def check_mcap_chunks(path: Path, max_chunk_bytes: int = MAX_CHUNK_BYTES) -> None:
    """Refuse an MCAP file whose chunks would inflate past ``max_chunk_bytes`` (declared or in their
    compression headers) or whose size the headers do not tell, before anything is decompressed
    (rosbags inflates a chunk whole: a 3 MB file could take gigabytes).

    Raises:
        SourceError: Naming the chunk and its size.
    """
    from mcap.records import Chunk
    from mcap.stream_reader import StreamReader

    with open(path, "rb") as f:
        for k, record in enumerate(StreamReader(f, emit_chunks=True, record_size_limit=max_chunk_bytes).records):
            if not isinstance(record, Chunk):
                continue
            inflated = _inflated_size(record.compression, record.data)
            if inflated is None:
                raise SourceError(f"{path}: chunk {k} ({record.compression}) does not say how large it inflates; "
                                  "refused before decompressing")
            size = max(inflated, record.uncompressed_size)
            if size > max_chunk_bytes:
                raise SourceError(f"{path}: chunk {k} inflates to {size} bytes, over the {max_chunk_bytes} byte cap "
                                  "(refused before decompressing)")


@dataclass(frozen=True)
class BagConfig:
    """Settings of a ``bag:PATH`` source (see :class:`BagSource` for each field).

    Attributes:
        path: The bag folder, or a ``.db3``/``.mcap`` file inside one.
        color_topic, depth_topic, info_topic, pose_topic: Topics; None picks by message type and name.
        sync_tolerance_s: Max stamp difference to pair depth with colour (s).
        pose_tolerance_s: Max stamp difference to pair a pose with colour (s).
        T_child_camera: 4×4 pose of the optical frame in the pose message's child frame; None: identity.
        world_frame_id: The world frame; None: the pose messages' ``header.frame_id``.
        max_chunk_bytes: MCAP chunks inflating past this are refused before decompression.
    """

    path: str | Path = ""
    color_topic: str | None = None
    depth_topic: str | None = None
    info_topic: str | None = None
    pose_topic: str | None = None
    sync_tolerance_s: float = 0.02
    pose_tolerance_s: float = 0.1
    T_child_camera: Any = None
    world_frame_id: str | None = None
    max_chunk_bytes: int = MAX_CHUNK_BYTES

    def __post_init__(self):
        if not str(self.path):
            raise ConfigError("bag needs a path: bag:PATH (a bag folder, or a .db3/.mcap file in one)")
        if self.sync_tolerance_s < 0 or self.pose_tolerance_s < 0 or self.max_chunk_bytes < 1:
            raise ConfigError("sync_tolerance_s and pose_tolerance_s must be >= 0, max_chunk_bytes >= 1")


class BagSource(FrameSource):
    """Frames from a ROS 2 bag folder (or a single ``.db3``/``.mcap`` file inside one).

    Args:
        config: A :class:`BagConfig`, or its ``path`` (the bag folder, with ``metadata.yaml``).
        **options: :class:`BagConfig` fields, over those of ``config``: topics (None picks them by type
            and name: ``color``/``depth`` in the name), tolerances, ``T_child_camera`` (the optical
            frame in the pose message's child frame, Odometry ``child_frame_id``, usually
            ``base_link``), ``max_chunk_bytes`` (:func:`check_mcap_chunks`).

    Raises:
        SourceError: Not a bag, no colour / CameraInfo topic, or an MCAP chunk over ``max_chunk_bytes``.
    """

    config_class = BagConfig
    primary_option = "path"

    def __init__(self, config: BagConfig | str | Path | None = None, /, **options: Any):
        self.config = cfg = self.resolve_config(config, options)
        color_topic, depth_topic, info_topic, pose_topic = cfg.color_topic, cfg.depth_topic, cfg.info_topic, cfg.pose_topic
        sync_tolerance_s, pose_tolerance_s, T_child_camera = cfg.sync_tolerance_s, cfg.pose_tolerance_s, cfg.T_child_camera
        world_frame_id, max_chunk_bytes = cfg.world_frame_id, cfg.max_chunk_bytes
        rosbag2 = require("rosbags.rosbag2", "bags")
        path = Path(cfg.path)
        if path.is_file():
            path = path.parent
        self.path = path
        self.source_id = f"bag:{path}"
        for f in path.glob("*.mcap"):  # before rosbags touches a chunk
            try:
                check_mcap_chunks(f, max_chunk_bytes)
            except SourceError:
                raise
            except Exception as exc:  # noqa: BLE001 - a damaged file: the reader names it when read
                logger.debug("%s: chunk sizes not checked (%s)", f, exc)
        try:
            self.reader = rosbag2.Reader(path)
            self.reader.open()
        except Exception as exc:  # rosbags raises its own ReaderError and OSErrors
            raise SourceError(f"cannot open bag {path}: {exc}") from exc
        self.store = typestore()
        conns = {c.topic: c for c in self.reader.connections}

        def pick(explicit, types, word=None, avoid=None):
            if explicit:
                if explicit not in conns:
                    raise SourceError(f"topic {explicit} not in {path} (topics: {sorted(conns)})")
                return conns[explicit]
            cands = [c for c in conns.values() if c.msgtype in types]
            if word:
                named = [c for c in cands if word in c.topic and not (avoid and avoid in c.topic)]
                cands = named or [c for c in cands if not (avoid and avoid in c.topic)]
            return sorted(cands, key=lambda c: c.topic)[0] if cands else None

        self.color = pick(color_topic, (IMAGE, COMPRESSED), "color", avoid="depth")
        self.depth = pick(depth_topic, (IMAGE, COMPRESSED), "depth")
        self.info = pick(info_topic, (CAMERA_INFO,), "color")
        self.pose = pick(pose_topic, (ODOMETRY, POSE_STAMPED, POSE_WITH_COVARIANCE))
        if self.color is None or self.info is None:
            self.reader.close()
            raise SourceError(f"{path} needs a colour image topic and a CameraInfo topic (topics: {sorted(conns)})")
        if self.depth is not None and self.depth.topic == self.color.topic:
            self.depth = None
        self.sync_tolerance_s, self.pose_tolerance_s = sync_tolerance_s, pose_tolerance_s
        self.T_child_camera = np.eye(4) if T_child_camera is None else np.asarray(T_child_camera, dtype=float)
        self.world_frame_id = world_frame_id
        self.skipped = []
        for f in self.path.glob("*.mcap"):
            if mcap_has_crcs(f) is False:
                logger.warning("%s: its chunks carry no CRC (rosbags' writer): corrupted message data cannot be "
                               "detected while reading", f)

    def _skip(self, reason: str) -> None:
        logger.warning("%s: skipping %s", self.path, reason)
        self.skipped.append(reason)

    def _messages(self, conns):
        """``(connection, message)`` of ``conns`` in recorded order; damage is one SourceError."""
        counts = {c.topic: 0 for c in conns}
        try:
            for c, _, raw in self.reader.messages(connections=conns):
                counts[c.topic] += 1
                try:
                    msg = self.store.deserialize_cdr(raw, c.msgtype)
                except Exception as exc:  # noqa: BLE001 - one undecodable message is skipped, named
                    self._skip(f"{c.topic} message {counts[c.topic]}: cannot deserialize ({type(exc).__name__}: {exc})")
                    continue
                yield c, msg
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - sqlite/mcap/rosbags errors: the file is damaged
            raise SourceError(f"bag {self.path} is corrupt or truncated: reading failed after "
                              + ", ".join(f"{n} messages on {t}" for t, n in counts.items())
                              + f" ({type(exc).__name__}: {exc})") from exc
        for c in conns:
            expected = getattr(c, "msgcount", 0) or 0
            if counts[c.topic] < expected:
                raise SourceError(f"bag {self.path}: metadata.yaml lists {expected} messages on {c.topic} but the "
                                  f"file holds {counts[c.topic]} (truncated or corrupt)")

    def __iter__(self) -> Iterator[Frame]:
        from vilasr_ros.health import SensorHealth
        from vilasr_ros.pairing import FrameAssembler

        health = SensorHealth()
        assembler = FrameAssembler(
            lambda m: decode_color(m, self.color.msgtype),
            lambda m: decode_depth(m, self.depth.msgtype), T_base_camera=self.T_child_camera,
            tolerance_s=self.sync_tolerance_s, pose_tolerance_s=self.pose_tolerance_s,
            expect_depth=self.depth is not None, world_frame_id=self.world_frame_id, source_id=self.source_id,
            health=health, expect_pose=self.pose is not None)
        conns = [c for c in (self.color, self.depth, self.info, self.pose) if c is not None]
        dropped = 0
        for conn, msg in self._messages(conns):
            try:
                t = stamp_s(msg.header)
                if conn is self.color:
                    frames = assembler.add_colour(t, msg, msg.header.frame_id)
                elif conn is self.depth:
                    frames = assembler.add_depth(t, msg)
                elif conn is self.info:
                    frames = assembler.add_camera_info(intrinsics_from_camera_info(msg))
                else:
                    t, T, world = pose_from_message(msg)
                    frames = assembler.add_pose(t, T, world)
            except (FrameError, ValueError) as exc:  # MessageError is a ValueError
                self._skip(f"{conn.topic} message: {exc}")
                continue
            if health.total_dropped > dropped:
                dropped = health.total_dropped
                self._skip(health.last_reason or "a message was dropped")
            yield from frames
        yield from assembler.flush(force=True)

    def close(self) -> None:
        self.reader.close()


# ----------------------------------------------------------------------------- writing


def _header(store, t: float, frame_id: str):
    Header = store.types["std_msgs/msg/Header"]
    Time = store.types["builtin_interfaces/msg/Time"]
    sec = int(np.floor(t))
    return Header(stamp=Time(sec=sec, nanosec=int(round((t - sec) * 1e9))), frame_id=frame_id)


def encode_color(store, frame: Frame, compressed: str | None):
    """sensor_msgs Image (rgb8) or CompressedImage (``jpeg``/``png``) of a frame's colour."""
    header = _header(store, frame.stamp_s, frame.frame_id)
    if compressed:
        fmt, data = compress_colour(frame.rgb, compressed, quality=75)
        msg = store.types[COMPRESSED](header=header, format=fmt, data=np.frombuffer(data, dtype=np.uint8))
        return msg, COMPRESSED
    h, w = frame.rgb.shape[:2]
    msg = store.types[IMAGE](header=header, height=h, width=w, encoding="rgb8", is_bigendian=0, step=w * 3,
                             data=np.ascontiguousarray(frame.rgb).reshape(-1))
    return msg, IMAGE


def encode_depth(store, frame: Frame, encoding: str = "16UC1", compressed: bool = False):
    """Depth as 16UC1 millimetres / 32FC1 metres Image, or 16UC1 compressedDepth."""
    header = _header(store, frame.stamp_s, frame.frame_id)
    depth = np.nan_to_num(frame.depth_m, nan=0.0)
    h, w = depth.shape
    if compressed:
        fmt, data = compress_depth(depth)
        msg = store.types[COMPRESSED](header=header, format=fmt, data=np.frombuffer(data, dtype=np.uint8))
        return msg, COMPRESSED
    raw, step = raw_depth(depth, encoding)
    msg = store.types[IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=step,
                             data=np.frombuffer(raw, dtype=np.uint8))
    return msg, IMAGE


def camera_info_msg(store, frame: Frame):
    """sensor_msgs CameraInfo of a frame's intrinsics (:func:`vilasr_ros.messages.camera_info_fields`)."""
    fields = camera_info_fields(frame.intrinsics)
    return store.types[CAMERA_INFO](
        header=_header(store, frame.stamp_s, frame.frame_id), height=fields["height"], width=fields["width"],
        distortion_model=fields["distortion_model"], d=np.array(fields["d"], dtype=np.float64),
        k=np.array(fields["k"]), r=np.array(fields["r"]), p=np.array(fields["p"]), binning_x=0, binning_y=0,
        roi=store.types["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def odometry_msg(store, frame: Frame, child_frame_id: str | None = None):
    """nav_msgs/Odometry carrying ``T_world_camera`` (child = the optical frame unless given)."""
    from scipy.spatial.transform import Rotation

    T = frame.T_world_camera
    q = Rotation.from_matrix(T[:3, :3]).as_quat()
    g = store.types
    pose = g["geometry_msgs/msg/Pose"](
        position=g["geometry_msgs/msg/Point"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
        orientation=g["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )
    zeros = np.zeros(36)
    vector = g["geometry_msgs/msg/Vector3"]
    return g[ODOMETRY](
        header=_header(store, frame.stamp_s, frame.world_frame_id),
        child_frame_id=child_frame_id or frame.frame_id,
        pose=g["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=zeros),
        twist=g["geometry_msgs/msg/TwistWithCovariance"](
            twist=g["geometry_msgs/msg/Twist"](linear=vector(x=0.0, y=0.0, z=0.0), angular=vector(x=0.0, y=0.0, z=0.0)),
            covariance=zeros,
        ),
    )


def write_bag(frames, path: str | Path, *, storage: str = "sqlite3", color_compressed: str | None = None,
              depth_encoding: str = "16UC1", depth_compressed: bool = False,
              prefix: str = "/camera/camera") -> Path:
    """Record frames as a ROS 2 bag with realsense-ros topic names.

    Topics: ``{prefix}/color/image_raw`` (or ``/compressed``), ``{prefix}/aligned_depth_to_color/
    image_raw`` (or ``/compressedDepth``), ``{prefix}/color/camera_info``, ``/odom``.

    Args:
        frames: Frames to write.
        path: New bag folder.
        storage: ``sqlite3`` or ``mcap``.
        color_compressed: None (raw rgb8), ``"jpeg"`` or ``"png"``.
        depth_encoding: ``16UC1`` (mm) or ``32FC1`` (m) for raw depth.
        depth_compressed: Write 16UC1 compressedDepth instead of raw depth.
    """
    rosbag2 = require("rosbags.rosbag2", "bags")
    store = typestore()
    plugin = {"sqlite3": rosbag2.StoragePlugin.SQLITE3, "mcap": rosbag2.StoragePlugin.MCAP}[storage]
    path = Path(path)
    with rosbag2.Writer(path, version=9, storage_plugin=plugin) as writer:
        conns: dict[str, object] = {}

        def put(topic, msg, msgtype, t):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(conns[topic], int(round(t * 1e9)), store.serialize_cdr(msg, msgtype))

        for frame in frames:
            t = frame.stamp_s
            msg, mtype = encode_color(store, frame, color_compressed)
            put(f"{prefix}/color/image_raw" + ("/compressed" if color_compressed else ""), msg, mtype, t)
            if frame.depth_m is not None:
                msg, mtype = encode_depth(store, frame, depth_encoding, depth_compressed)
                topic = f"{prefix}/aligned_depth_to_color/image_raw" + ("/compressedDepth" if depth_compressed else "")
                put(topic, msg, mtype, t)
            put(f"{prefix}/color/camera_info", camera_info_msg(store, frame), CAMERA_INFO, t)
            if frame.T_world_camera is not None:
                put("/odom", odometry_msg(store, frame), ODOMETRY, t)
    if storage == "mcap":
        add_mcap_crcs(next(path.glob("*.mcap")))
    return path


def add_mcap_crcs(path: Path) -> None:
    """Rewrite an MCAP file with chunk CRCs (what ``ros2 bag record`` writes; rosbags' writer leaves
    them out), so a reader detects corrupted chunks. Same records, uncompressed chunks.

    Raises:
        MissingDependencyError: The ``mcap`` package (``bags`` extra) is missing.
    """
    require("mcap", "bags")
    from mcap.reader import make_reader
    from mcap.writer import CompressionType, Writer

    data = path.read_bytes()
    reader = make_reader(io.BytesIO(data))
    header = reader.get_header()
    tmp = path.with_suffix(".mcap.tmp")
    with open(tmp, "wb") as out:
        writer = Writer(out, compression=CompressionType.NONE, enable_crcs=True)
        writer.start(profile=header.profile, library=header.library)
        schemas: dict[int, int] = {}
        channels: dict[int, int] = {}
        for schema, channel, message in reader.iter_messages(log_time_order=False):
            if schema.id not in schemas:
                schemas[schema.id] = writer.register_schema(schema.name, schema.encoding, schema.data)
            if channel.id not in channels:
                channels[channel.id] = writer.register_channel(channel.topic, channel.message_encoding,
                                                               schemas[schema.id], channel.metadata)
            writer.add_message(channels[channel.id], message.log_time, message.data, message.publish_time,
                               message.sequence)
        writer.finish()
    tmp.replace(path)
