"""The ``vilasr_agent`` node's parameters as one frozen dataclass (ROS-free).

Every parameter is a field made by :func:`vilasr_ros.settings.setting`; where it sets another
component (the buffer, the agent, grounding, the loop, an engine), its default is read from that
component's config (:func:`~vilasr_ros.settings.default_of`), so each default is written once. The
node declares its parameters from :func:`~vilasr_ros.settings.specs` of :class:`AgentNodeSettings`
and builds the components with the ``*_config`` methods; ``config/agent.yaml`` is checked against
the same table (``test_agent.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vilasr_ros.agent import AgentConfig
from vilasr_ros.buffer import BufferConfig
from vilasr_ros.engines.base import SamplingConfig
from vilasr_ros.grounding import GroundingConfig
from vilasr_ros.memory import MemoryConfig
from vilasr_ros.pairing import FrameAssembler, MapAlignment
from vilasr_ros.query import MAX_QUERY_FRAMES, SELECTIONS
from vilasr_ros.reasoner import ReasonerConfig
from vilasr_ros.settings import check_settings, default_of, setting

MIB = 2**20


def _none_to(zero):
    return lambda v: zero if v is None else v


@dataclass(frozen=True)
class AgentNodeSettings:
    """The node's parameters (names, defaults, ranges: the fields below; README "Parameters").

    Raises:
        ConfigError: A value outside its range or choices (at construction).
    """

    # topics and frames
    color_topic: str = setting("/camera/camera/color/image_raw", "sensor_msgs/Image colour topic")
    depth_topic: str = setting("/camera/camera/aligned_depth_to_color/image_raw",
                               "depth registered to colour (16UC1 mm / 32FC1 m)")
    camera_info_topic: str = setting("/camera/camera/color/camera_info", "CameraInfo of the colour camera")
    odom_topic: str = setting("/odom", "nav_msgs/Odometry: T_odom_base")
    color_transport: str = setting("raw", "raw (Image) | compressed (image_transport jpeg/png on <color_topic>/compressed)",
                                   choices=("raw", "compressed"))
    depth_transport: str = setting("raw", "raw (Image) | compressedDepth (on <depth_topic>/compressedDepth)",
                                   choices=("raw", "compressedDepth"))
    map_pose_topic: str = setting("", "map pose of the base (AMCL: /amcl_pose); empty: targets stay in the odometry frame")
    map_pose_type: str = setting("PoseWithCovarianceStamped", "PoseWithCovarianceStamped (AMCL) | PoseStamped (SLAM)",
                                 choices=("PoseWithCovarianceStamped", "PoseStamped"))
    max_map_covariance: float = setting(default_of(MapAlignment, "max_covariance_m2"),
                                        "a map pose whose x/y variance is larger (m²) is not trusted: no goal until a trusted one",
                                        low=1e-6, high=1e6)
    autostart: bool = setting(True, "configure and activate at start (false: a lifecycle manager drives the node)")
    T_base_camera: list = setting([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
                                  "[x y z qx qy qz qw] of the colour optical frame in the odometry child frame")
    world_frame_id: str = setting("", "world frame of targets; empty = the odometry's header.frame_id")
    expect_depth: bool = setting(True, "wait for a depth image per colour image")
    sync_tolerance_s: float = setting(default_of(FrameAssembler, "tolerance_s"), "max colour/depth stamp difference (s)",
                                      low=0.0, high=1.0)
    pose_tolerance_s: float = setting(default_of(FrameAssembler, "pose_tolerance_s"),
                                      "max colour/odometry stamp difference (s)", low=0.0, high=5.0)
    max_speed_mps: float = setting(default_of(FrameAssembler, "max_speed_mps"),
                                   "odometry implying a faster motion is rejected as a jump (m/s)", low=0.01, high=1000.0)
    max_future_stamp_s: float = setting(default_of(BufferConfig, "max_future_s"),
                                        "frames stamped further ahead of the node clock are dropped (s)", low=0.001, high=3600.0)
    # keyframe buffer
    buffer_max_frames: int = setting(default_of(BufferConfig, "max_frames"), "keyframes kept at most",
                                     name="buffer.max_frames", low=1, high=100000)
    buffer_max_bytes_mb: int = setting(default_of(BufferConfig, "max_bytes", lambda b: b // MIB),
                                       "RGB-D bytes kept at most (MiB)", name="buffer.max_bytes_mb", low=1, high=1 << 20)
    buffer_min_translation_m: float = setting(default_of(BufferConfig, "min_translation_m"),
                                              "keyframe when the camera moved more than this (m)",
                                              name="buffer.min_translation_m", low=0.0, high=100.0)
    buffer_min_rotation_deg: float = setting(default_of(BufferConfig, "min_rotation_deg"),
                                             "...or turned more than this (deg)", name="buffer.min_rotation_deg",
                                             low=0.0, high=360.0)
    buffer_max_interval_s: float = setting(default_of(BufferConfig, "max_interval_s"), "...or this much time passed (s)",
                                           name="buffer.max_interval_s", low=0.0, high=3600.0)
    # queries
    frames: int = setting(default_of(AgentConfig, "frames"), "frames per query (VSI-Bench protocol: 16)",
                          low=1, high=MAX_QUERY_FRAMES, dynamic=True)
    selection: str = setting(default_of(AgentConfig, "selection", str), "frame selection", choices=SELECTIONS, dynamic=True)
    window_s: float = setting(default_of(AgentConfig, "window_s", _none_to(0.0)),
                              "only keyframes this recent (s); 0 = whole buffer", low=0.0, high=86400.0, dynamic=True)
    max_age_s: float = setting(default_of(AgentConfig, "max_age_s", _none_to(0.0)),
                               "refuse queries when no usable frame arrived for this long (s); 0 = never",
                               low=0.0, high=86400.0, dynamic=True)
    max_queued_queries: int = setting(8, "queries waiting at most; more are answered 'rejected'", low=1, high=1000)
    max_query_bytes: int = setting(4096, "largest accepted query JSON (bytes)", low=64, high=1 << 20, dynamic=True)
    trace_root: str = setting(default_of(AgentConfig, "trace_root", _none_to("")),
                              "folder for per-query traces; empty = do not save (read-only at run time)")
    trace_max_total_mb: float = setting(default_of(AgentConfig, "trace_max_total_mb"),
                                        "traces kept at most, all together (MiB); oldest removed first", low=1.0, high=1.0e7)
    trace_max_age_h: float = setting(default_of(AgentConfig, "trace_max_age_h"),
                                     "traces older than this are removed (hours); 0 = size bound only", low=0.0, high=1.0e6)
    publish_goal_pose: bool = setting(False, "also publish targets on /goal_pose for Nav2 (read-only at run time)")
    min_goal_confidence: float = setting(default_of(AgentConfig, "min_goal_confidence"),
                                         "grounding confidence needed before a target is published as a goal",
                                         low=0.0, high=1.0, dynamic=True)
    standoff_m: float = setting(default_of(GroundingConfig, "standoff_m"), "approach distance from the target (m)",
                                low=0.0, high=10.0, dynamic=True)
    floor_z_m: float = setting(default_of(GroundingConfig, "floor_z_m"), "floor height in the world frame (m, z up)",
                               low=-100.0, high=100.0, dynamic=True)
    remove_floor: bool = setting(default_of(GroundingConfig, "remove_floor"),
                                 "drop floor and background-wall pixels in the box before placing the target "
                                 "(z-up world frame with the floor at floor_z_m, as REP-103 map/odom)", dynamic=True)
    # keyframe memory on disk (read-only at run time)
    memory_dir: str = setting("", "keyframe memory folder (every keyframe kept on disk; a restart continues it); "
                                  "empty = the RAM buffer only")
    regions_file: str = setting("", "YAML of named map-frame polygons for queries' 'region' (regions: {name: [[x, y], ...]})")
    embedder_model: str = setting("", "SigLIP/CLIP folder or cached id for the memory's text search "
                                      "(empty: retrieval by place, time and coverage)")
    memory_max_mb: int = setting(default_of(MemoryConfig, "max_bytes", lambda b: b // MIB),
                                 "keyframe memory size cap (MiB); the oldest keyframes go first", name="memory.max_mb",
                                 low=1, high=1 << 30)
    memory_max_age_h: float = setting(default_of(MemoryConfig, "max_age_s", lambda s: 0.0 if s is None else s / 3600.0),
                                      "keyframes older than this are deleted (hours); 0 = size cap only",
                                      name="memory.max_age_h", low=0.0, high=1.0e6)
    memory_min_translation_m: float = setting(default_of(MemoryConfig, "min_translation_m"),
                                              "remember a buffer keyframe when the camera moved more than this since "
                                              "the last remembered one (m)", name="memory.min_translation_m", low=0.0, high=100.0)
    memory_min_rotation_deg: float = setting(default_of(MemoryConfig, "min_rotation_deg"), "...or turned more than this (deg)",
                                             name="memory.min_rotation_deg", low=0.0, high=360.0)
    memory_max_interval_s: float = setting(default_of(MemoryConfig, "max_interval_s"), "...or this much time passed (s)",
                                           name="memory.max_interval_s", low=0.0, high=3600.0)
    # engine (read-only: restart the node to change)
    engine: str = setting("transformers", "auto | replay | transformers | openai | vllm | remote | (installed plug-ins)")
    model: str = setting("", "model folder or HF id (empty: AntResearchNLP/ViLaSR)")
    base_url: str = setting("", "server: OpenAI-compatible (http://gpu:8000/v1) or a vilasr serve")
    api_key_env: str = setting("", "openai: environment variable holding the API key (empty: OPENAI_API_KEY)")
    responses: str = setting("", "replay engine: JSON list of model turns (empty: the shipped demo)")
    request_timeout_s: float = setting(300.0, "server engines: wall-clock deadline of one model call (s)",
                                       low=0.1, high=3600.0)
    image_format: str = setting("", "server engines: png | jpeg | bmp (empty: png)")
    device: str = setting("", "transformers engine: cuda | cpu (empty: cuda when available)")
    turn_reuse: bool = setting(True, "transformers engine: reuse KV cache and vision features across turns")
    model_family: str = setting("", "qwen2_5_vl | qwen3_vl (empty: from the model folder's config.json, else qwen2_5_vl)")
    tools: bool = setting(True, "the drawing tools (false: the no-tools baseline: one plain answer, no box, no goal)")
    max_pixels: int = setting(default_of(ReasonerConfig, "max_pixels"), "smart_resize area cap per input image",
                              low=3136, high=16777216)
    max_turns: int = setting(default_of(ReasonerConfig, "max_turns"), "model calls per query", low=1, high=100)
    temperature: float = setting(default_of(SamplingConfig, "temperature"), "sampling temperature (0 = greedy)",
                                 low=0.0, high=5.0)
    top_p: float = setting(default_of(SamplingConfig, "top_p"), "nucleus sampling", low=0.001, high=1.0)
    max_tokens: int = setting(default_of(SamplingConfig, "max_tokens"), "new tokens per model call", low=1, high=1 << 20)

    def __post_init__(self):
        check_settings(self)

    # --------------------------------------------------------------- the components

    def buffer_config(self) -> BufferConfig:
        return BufferConfig(max_frames=self.buffer_max_frames, max_bytes=self.buffer_max_bytes_mb * MIB,
                            min_translation_m=self.buffer_min_translation_m, min_rotation_deg=self.buffer_min_rotation_deg,
                            max_interval_s=self.buffer_max_interval_s, max_future_s=self.max_future_stamp_s)

    def agent_config(self) -> AgentConfig:
        return AgentConfig(
            frames=self.frames, selection=self.selection, window_s=self.window_s or None,
            max_age_s=self.max_age_s or None, trace_root=self.trace_root or None,
            trace_max_total_mb=self.trace_max_total_mb, trace_max_age_h=self.trace_max_age_h,
            min_goal_confidence=self.min_goal_confidence,
            grounding=GroundingConfig(standoff_m=self.standoff_m, floor_z_m=self.floor_z_m, remove_floor=self.remove_floor))

    def memory(self):
        """The :class:`~vilasr_ros.retrieval.AgentMemory` of ``memory_dir`` (None when empty).

        Raises:
            MemoryStoreError: The folder or ``regions_file`` cannot be used.
        """
        if not self.memory_dir:
            return None
        from vilasr_ros.retrieval import AgentMemory

        return AgentMemory(self.memory_dir, self.regions_file or None, embedder_model=self.embedder_model or None,
                           config=MemoryConfig(
            max_bytes=self.memory_max_mb * MIB, max_age_s=self.memory_max_age_h * 3600.0 or None,
            min_translation_m=self.memory_min_translation_m, min_rotation_deg=self.memory_min_rotation_deg,
            max_interval_s=self.memory_max_interval_s))

    def loop_options(self) -> dict[str, Any]:
        """Options of :func:`vilasr_ros.reasoner.reasoner_config`."""
        from vilasr_ros.families import model_family

        return {"max_pixels": self.max_pixels, "max_turns": self.max_turns, "temperature": self.temperature,
                "top_p": self.top_p, "max_tokens": self.max_tokens,  # no family set: the engine's (config.json)
                "model_family": model_family(self.model_family).name if self.model_family else None,
                "prompt_layout": None if self.tools else "baseline"}

    def assembler_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`vilasr_ros.pairing.FrameAssembler` these parameters set."""
        return {"tolerance_s": self.sync_tolerance_s, "pose_tolerance_s": self.pose_tolerance_s,
                "expect_depth": self.expect_depth, "world_frame_id": self.world_frame_id or None,
                "source_id": "ros:" + self.color_topic, "max_speed_mps": self.max_speed_mps,
                "expect_pose": bool(self.odom_topic)}


ENGINE_PARAMETERS = {"model": "model", "base_url": "base_url", "api_key_env": "api_key_env", "responses": "responses",
                     "request_timeout_s": "timeout_s", "image_format": "image_format", "device": "device",
                     "turn_reuse": "turn_reuse"}
"""Engine parameters → engine options (:func:`vilasr_ros.engines.engine_options` checks they apply)."""


def engine_from_settings(s: AgentNodeSettings):
    """Engine name, validated config and a sentence saying which engine answers — from the node's
    parameters, through the same front end as ``vilasr ask`` (nothing is loaded here).

    Raises:
        ConfigError: An engine parameter set for an engine that does not take it, or a bad value.
    """
    from vilasr_ros.engines import choose_engine, engine_class, engine_config, engine_options
    from vilasr_ros.settings import specs

    table = specs(AgentNodeSettings)
    name, sentence = choose_engine(s.engine, model=s.model or None, base_url=s.base_url or None)
    given = {option: getattr(s, param) for param, option in ENGINE_PARAMETERS.items()
             if getattr(s, param) not in ("", None) and getattr(s, param) != table[param].default}
    options = engine_options(name, given, {o: f"parameter {k}" for k, o in ENGINE_PARAMETERS.items()})
    if "timeout_s" in engine_class(name).config_class.__dataclass_fields__:
        options.setdefault("timeout_s", s.request_timeout_s)
    return name, engine_config(name, **options), sentence
