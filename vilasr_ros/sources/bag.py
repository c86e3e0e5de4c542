"""``bag:PATH`` — ROS 2 bags (sqlite3 or mcap) through ``rosbags``; and writing frames into one.

Reads ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8; depth 16UC1 millimetres or 32FC1
metres), ``sensor_msgs/CompressedImage`` (jpeg/png colour; ``compressedDepth`` as written by
image_transport's compressed_depth plugin: a 12-byte ``ConfigHeader`` then PNG),
``sensor_msgs/CameraInfo`` and the camera pose from ``nav_msgs/Odometry`` or
``geometry_msgs/PoseStamped``. A frame is made for every colour message, paired with the depth and
pose messages nearest in header stamp (within ``sync_tolerance_s``) and the latest CameraInfo.

Bad bags: a file that cannot be read on (sqlite "database disk image is malformed", an MCAP chunk
whose CRC does not match, fewer messages than ``metadata.yaml`` lists) raises one
:class:`SourceError` naming the bag, the topic and how far it got; one message that does not
deserialize or decode is skipped, logged and listed in ``skipped``. MCAP files whose chunks carry no
CRC (rosbags' own writer) cannot be checked for corrupted payloads: a warning says so once.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vilasr_ros.errors import require
from vilasr_ros.frames import CameraIntrinsics, Frame, FrameError
from vilasr_ros.sources.base import FrameSource, SourceError

logger = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_STAMPED = "geometry_msgs/msg/PoseStamped"
COLOR_ENCODINGS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def typestore():
    rosbags_typesys = require("rosbags.typesys", "bags")
    return rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_JAZZY)


def stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


def pose_to_matrix(position, orientation) -> np.ndarray:
    """geometry_msgs Point + Quaternion (x y z w) → 4×4."""
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([orientation.x, orientation.y, orientation.z, orientation.w]).as_matrix()
    T[:3, 3] = [position.x, position.y, position.z]
    return T


def decode_color(msg, msgtype: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an Image or CompressedImage message.

    Raises:
        SourceError: Unknown encoding or undecodable data.
    """
    if msgtype == COMPRESSED:
        from PIL import Image

        try:
            return np.asarray(Image.open(io.BytesIO(bytes(msg.data))).convert("RGB"))
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
            raise SourceError(f"cannot decode compressed colour image ({msg.format}): {exc}") from exc
    enc = msg.encoding
    if enc not in COLOR_ENCODINGS:
        raise SourceError(f"unsupported colour encoding {enc!r}; use one of {', '.join(COLOR_ENCODINGS)}")
    ch = COLOR_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = bytes(msg.data)
    if step < w * ch or len(data) < h * step or h < 1 or w < 1:
        raise SourceError(f"{enc} image {w}x{h} with step {step} needs {h * step} bytes, got {len(data)}")
    rows = np.frombuffer(data[: h * step], dtype=np.uint8).reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc == "mono8":
        return np.repeat(rows, 3, axis=2)
    if enc.startswith("bgr"):
        rows = rows[:, :, [2, 1, 0]]
    return np.ascontiguousarray(rows[:, :, :3])


def decode_depth(msg, msgtype: str) -> np.ndarray:
    """(H, W) float32 metres from a 16UC1/32FC1 Image or a compressedDepth CompressedImage.

    Raises:
        SourceError: Unknown encoding or format.
    """
    from PIL import Image

    if msgtype == COMPRESSED:
        fmt = msg.format
        raw = bytes(msg.data)
        if "compressedDepth" not in fmt or len(raw) < 12:
            raise SourceError(f"unsupported compressed depth format {fmt!r} (expected '16UC1; compressedDepth png')")
        _, quant_a, quant_b = struct.unpack("<iff", raw[:12])
        try:
            values = np.asarray(Image.open(io.BytesIO(raw[12:])))
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError, ...
            raise SourceError(f"cannot decode compressedDepth PNG: {exc}") from exc
        if fmt.startswith("16UC1") or fmt.startswith("mono16"):
            return (values.astype(np.float32) / np.float32(1000.0)).astype(np.float32)
        if fmt.startswith("32FC1"):
            v = values.astype(np.float32)
            with np.errstate(divide="ignore"):
                depth = np.where(v > 0, quant_a / (v - quant_b), 0.0)
            return depth.astype(np.float32)
        raise SourceError(f"unsupported compressedDepth encoding {fmt!r}")
    enc = msg.encoding
    data = bytes(msg.data)
    big = bool(msg.is_bigendian)
    if enc in ("16UC1", "mono16"):
        arr = _rows(data, ">u2" if big else "<u2", msg, 2)
        _check_byte_order(arr.astype(np.float32) / 1000.0, arr.byteswap().astype(np.float32) / 1000.0, big)
        return (arr.astype(np.float32) / np.float32(1000.0)).astype(np.float32)
    if enc == "32FC1":
        arr = _rows(data, ">f4" if big else "<f4", msg, 4)
        with np.errstate(all="ignore"):
            _check_byte_order(arr.astype(np.float32), arr.byteswap().astype(np.float32), big)
        return np.ascontiguousarray(arr.astype(np.float32))
    raise SourceError(f"unsupported depth encoding {enc!r}; use 16UC1 (mm) or 32FC1 (m)")


def _rows(data: bytes, dtype: str, msg, itemsize: int) -> np.ndarray:
    """(height, width) values of an Image's data honouring ``step`` (row padding).

    Raises:
        SourceError: ``data`` is shorter than ``height * step`` or ``step`` is shorter than a row.
    """
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if step < w * itemsize or len(data) < h * step or h < 1 or w < 1:
        raise SourceError(f"{msg.encoding} image {w}x{h} with step {step} needs {h * step} bytes, got {len(data)}")
    return np.frombuffer(data[: h * step], dtype=dtype).reshape(h, step // itemsize)[:, :w]


def _plausible(depth_m: np.ndarray) -> float:
    """Share of non-zero readings between 5 cm and 30 m (what any RGB-D camera reports)."""
    d = depth_m[::4, ::4]
    nonzero = np.isfinite(d) & (d != 0)
    n = int(nonzero.sum())
    return float(((d > 0.05) & (d < 30.0) & nonzero).sum() / n) if n else 1.0


def _check_byte_order(as_flagged: np.ndarray, swapped: np.ndarray, big: bool) -> None:
    """Refuse depth whose bytes are in the other order than ``is_bigendian`` says: decoded as
    flagged it is mostly implausible, swapped it is mostly plausible (a driver bug that otherwise
    moves targets silently)."""
    flagged, other = _plausible(as_flagged), _plausible(swapped)
    if flagged < 0.5 and other >= 0.5 and other > 2 * flagged:
        raise SourceError(
            f"depth byte order: is_bigendian={int(big)} but the data reads as {'little' if big else 'big'}-endian "
            f"({100 * flagged:.0f}% of readings plausible as flagged, {100 * other:.0f}% swapped); frame dropped")


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


def intrinsics_from_camera_info(msg) -> CameraIntrinsics:
    return CameraIntrinsics.from_K(msg.k, msg.width, msg.height, D=tuple(msg.d), distortion_model=msg.distortion_model or "plumb_bob")


def _nearest(stamps: np.ndarray, t: float, tolerance: float) -> int | None:
    if len(stamps) == 0:
        return None
    i = int(np.searchsorted(stamps, t))
    best = min((j for j in (i - 1, i) if 0 <= j < len(stamps)), key=lambda j: abs(stamps[j] - t))
    return best if abs(stamps[best] - t) <= tolerance else None


class BagSource(FrameSource):
    """Frames from a ROS 2 bag folder (or a single ``.db3``/``.mcap`` file inside one).

    Args:
        path: Bag folder (with ``metadata.yaml``).
        color_topic, depth_topic, info_topic, pose_topic: Topic names; None picks them by type and
            name (``color``/``depth`` in the name).
        sync_tolerance_s: Max stamp difference to pair depth/pose with colour.
        T_child_camera: 4×4 pose of the optical frame in the pose message's child frame (Odometry
            ``child_frame_id``, usually ``base_link``); identity when the pose is the camera's.

    Raises:
        SourceError: Not a bag, or no colour / CameraInfo topic.
    """

    def __init__(self, path: str | Path, *, color_topic=None, depth_topic=None, info_topic=None, pose_topic=None,
                 sync_tolerance_s: float = 0.02, T_child_camera=None, world_frame_id: str | None = None):
        rosbag2 = require("rosbags.rosbag2", "bags")
        path = Path(path)
        if path.is_file():
            path = path.parent
        self.path = path
        self.source_id = f"bag:{path}"
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
        self.pose = pick(pose_topic, (ODOMETRY, POSE_STAMPED))
        if self.color is None or self.info is None:
            self.reader.close()
            raise SourceError(f"{path} needs a colour image topic and a CameraInfo topic (topics: {sorted(conns)})")
        if self.depth is not None and self.depth.topic == self.color.topic:
            self.depth = None
        self.sync_tolerance_s = sync_tolerance_s
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

    def _messages(self, conn):
        count = 0
        try:
            for c, _, raw in self.reader.messages(connections=[conn]):
                count += 1
                try:
                    msg = self.store.deserialize_cdr(raw, c.msgtype)
                except Exception as exc:  # noqa: BLE001 - one undecodable message is skipped, named
                    self._skip(f"{conn.topic} message {count}: cannot deserialize ({type(exc).__name__}: {exc})")
                    continue
                yield msg
        except SourceError:
            raise
        except Exception as exc:  # noqa: BLE001 - sqlite/mcap/rosbags errors: the file is damaged
            raise SourceError(f"bag {self.path} is corrupt or truncated: reading {conn.topic} failed after "
                              f"{count} messages ({type(exc).__name__}: {exc})") from exc
        expected = getattr(conn, "msgcount", 0) or 0
        if count < expected:
            raise SourceError(f"bag {self.path}: metadata.yaml lists {expected} messages on {conn.topic} but the "
                              f"file holds {count} (truncated or corrupt)")

    def __iter__(self) -> Iterator[Frame]:
        depth_msgs = []
        if self.depth is not None:
            depth_msgs = [(stamp_s(m.header), m) for m in self._messages(self.depth)]
        depth_stamps = np.array([t for t, _ in depth_msgs])
        poses, pose_frame = [], None
        if self.pose is not None:
            for m in self._messages(self.pose):
                p = m.pose.pose if self.pose.msgtype == ODOMETRY else m.pose
                poses.append((stamp_s(m.header), pose_to_matrix(p.position, p.orientation) @ self.T_child_camera))
                pose_frame = m.header.frame_id
        pose_stamps = np.array([t for t, _ in poses])
        infos = [(stamp_s(m.header), m) for m in self._messages(self.info)]
        info_stamps = np.array([t for t, _ in infos])
        if not infos:
            raise SourceError(f"bag {self.path}: no readable CameraInfo on {self.info.topic}")
        for index, msg in enumerate(self._messages(self.color)):
            t = stamp_s(msg.header)
            k = int(np.searchsorted(info_stamps, t + 1e-9)) - 1
            info = infos[max(k, 0)][1]
            try:
                rgb = decode_color(msg, self.color.msgtype)
                depth = None
                j = _nearest(depth_stamps, t, self.sync_tolerance_s)
                if j is not None:
                    depth = decode_depth(depth_msgs[j][1], self.depth.msgtype)
                elif self.depth is not None:
                    logger.debug("no depth within %.3f s of colour at %.3f", self.sync_tolerance_s, t)
            except SourceError as exc:
                self._skip(f"{self.color.topic} message {index}: {exc}")
                continue
            p = _nearest(pose_stamps, t, self.sync_tolerance_s)
            try:
                yield Frame(
                    rgb=rgb,
                    depth_m=depth,
                    intrinsics=intrinsics_from_camera_info(info),
                    T_world_camera=poses[p][1] if p is not None else None,
                    stamp_s=t,
                    frame_id=msg.header.frame_id or "camera_color_optical_frame",
                    world_frame_id=self.world_frame_id or pose_frame or "map",
                    source_id=self.source_id,
                    index=index,
                )
            except (FrameError, ValueError) as exc:
                self._skip(f"{self.color.topic} message {index}: {exc}")

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
        from PIL import Image as PILImage

        buf = io.BytesIO()
        PILImage.fromarray(frame.rgb).save(buf, format=compressed.upper())
        msg = store.types[COMPRESSED](header=header, format=f"rgb8; {compressed} compressed rgb8",
                                      data=np.frombuffer(buf.getvalue(), dtype=np.uint8))
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
    if compressed or encoding == "16UC1":
        mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
    if compressed:
        from PIL import Image as PILImage

        buf = io.BytesIO()
        PILImage.fromarray(mm).save(buf, format="PNG")
        data = struct.pack("<iff", 0, 0.0, 0.0) + buf.getvalue()
        msg = store.types[COMPRESSED](header=header, format="16UC1; compressedDepth png",
                                      data=np.frombuffer(data, dtype=np.uint8))
        return msg, COMPRESSED
    if encoding == "16UC1":
        raw, step = mm.astype("<u2").tobytes(), w * 2
    elif encoding == "32FC1":
        raw, step = depth.astype("<f4").tobytes(), w * 4
    else:
        raise ValueError(f"depth encoding must be 16UC1 or 32FC1, got {encoding!r}")
    msg = store.types[IMAGE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0, step=step,
                             data=np.frombuffer(raw, dtype=np.uint8))
    return msg, IMAGE


def camera_info_msg(store, frame: Frame):
    K = frame.intrinsics
    P = np.zeros((3, 4))
    P[:3, :3] = K.K
    D = list(K.D) or [0.0] * 5
    return store.types[CAMERA_INFO](
        header=_header(store, frame.stamp_s, frame.frame_id), height=K.height, width=K.width,
        distortion_model=K.distortion_model, d=np.array(D, dtype=np.float64), k=K.K.reshape(-1),
        r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
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
